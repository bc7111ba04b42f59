"""Tool calls out of model text: all at once (parse_tool_calls) or while it streams (ToolCallStream).

Both run the same scanner, which only commits to what no later text can change:
text that could still turn into a call is held back, and a call is reported once
its JSON is complete. So however the output is split into pieces, the stream's
deltas add up to exactly what parse_tool_calls returns for the whole output.

Content rules, for both formats: with no call found, the content is the output
unchanged. With calls, the text around them is content, trimmed of whitespace next
to the calls, separate pieces joined by a newline. Text that is not a valid call
(unbalanced JSON, an unknown shape) stays content.
"""

from __future__ import annotations

from .calls import (
    HERMES, HERMES_CLOSE, HERMES_OPEN, PYTHON_TAG, ParsedCall, call_from_json, check_format, object_end,
)

_WAIT = object()  # the scanner needs more text to decide


def parse_tool_calls(tool_format: str, text: str) -> tuple[str | None, list[ParsedCall]]:
    """(content or None, calls) for a finished output of a model using `tool_format`."""
    stream = ToolCallStream(tool_format)
    deltas = stream.feed(text) + stream.finish()
    content = "".join(d["content"] for d in deltas if "content" in d)
    return (content or None), list(stream.calls)


class ToolCallStream:
    """Turns streamed output text into OpenAI chat-completion delta dicts.

    Content comes as {"content": ...}; each call as a first delta with its index, id,
    type and name (arguments ""), then one with its arguments.
    """

    def __init__(self, tool_format: str) -> None:
        check_format(tool_format)
        self._scanner = _HermesScanner() if tool_format == HERMES else _Llama3Scanner()
        self._shaper = _ContentShaper()
        self._finished = False
        self.calls: list[ParsedCall] = []  # the calls streamed so far, with the ids they were streamed with

    def feed(self, text: str) -> list[dict]:
        if self._finished:
            raise RuntimeError("the stream is finished")
        return self._deltas(self._scanner.scan(text, final=False))

    def finish(self) -> list[dict]:
        """Deltas for whatever was held back; call once, after the last feed."""
        if self._finished:
            raise RuntimeError("the stream is finished")
        self._finished = True
        deltas = self._deltas(self._scanner.scan("", final=True))
        tail = self._shaper.finish()
        if tail:
            _add_content(deltas, tail)
        return deltas

    def _deltas(self, events) -> list[dict]:
        out: list[dict] = []
        for kind, value in events:
            if kind == "text":
                _add_content(out, self._shaper.text(value))
                continue
            self._shaper.call()
            index = len(self.calls)
            self.calls.append(value)
            head = {"index": index, "id": value.id, "type": "function",
                    "function": {"name": value.name, "arguments": ""}}
            out.append({"tool_calls": [head]})
            out.append({"tool_calls": [{"index": index, "function": {"arguments": value.arguments}}]})
        return out


def _add_content(deltas: list[dict], text: str) -> None:
    if not text:
        return
    if deltas and "content" in deltas[-1]:
        deltas[-1]["content"] += text
    else:
        deltas.append({"content": text})


class _ContentShaper:
    """Applies the content rules to text pieces as they come, holding back trailing whitespace."""

    def __init__(self) -> None:
        self._held = ""  # whitespace not yet known to be inside content
        self._seen_call = False
        self._after_call = False  # no content since the last call: leading whitespace is dropped
        self._emitted = False

    def text(self, piece: str) -> str:
        core = piece.rstrip()
        if not core:
            if not self._after_call:
                self._held += piece
            return ""
        if self._after_call:
            core = core.lstrip()
            lead = "\n" if self._emitted else ""
            self._after_call = False
        else:
            lead = self._held
        self._held = piece[len(piece.rstrip()):]
        self._emitted = True
        return lead + core

    def call(self) -> None:
        self._held = ""
        self._after_call = self._seen_call = True

    def finish(self) -> str:
        held, self._held = self._held, ""
        return "" if self._seen_call else held


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _partial_suffix(text: str, start: int, tag: str) -> int:
    """Length of the longest end of text[start:] that is a proper beginning of `tag`."""
    for n in range(min(len(tag) - 1, len(text) - start), 0, -1):
        if tag.startswith(text[len(text) - n:]):
            return n
    return 0


def _json_call(buf: str, q: int, final: bool):
    """The call whose JSON object opens at buf[q]: (call, end), None (not a call) or _WAIT."""
    if q == len(buf):
        return None if final else _WAIT
    if buf[q] != "{":
        return None
    end = object_end(buf, q)
    if end is None:
        return None if final else _WAIT
    call = call_from_json(buf[q:end])
    return None if call is None else (call, end)


class _HermesScanner:
    """<tool_call> {json} </tool_call> blocks anywhere in the text."""

    def __init__(self) -> None:
        self._buf = ""

    def scan(self, text: str, final: bool) -> list[tuple]:
        buf = self._buf + text
        events: list[tuple] = []
        pos = 0
        while True:
            i = buf.find(HERMES_OPEN, pos)
            if i < 0:
                end = len(buf) - (0 if final else _partial_suffix(buf, pos, HERMES_OPEN))
                if end > pos:
                    events.append(("text", buf[pos:end]))
                pos = end
                break
            if i > pos:
                events.append(("text", buf[pos:i]))
            pos = i
            found = self._call(buf, i + len(HERMES_OPEN), final)
            if found is _WAIT:
                break
            if found is None:  # not a call: the tag is plain text
                events.append(("text", HERMES_OPEN))
                pos = i + len(HERMES_OPEN)
            else:
                events.append(("call", found[0]))
                pos = found[1]
        self._buf = buf[pos:]
        return events

    @staticmethod
    def _call(buf: str, start: int, final: bool):
        found = _json_call(buf, _skip_ws(buf, start), final)
        if found is None or found is _WAIT:
            return found
        call, end = found
        r = _skip_ws(buf, end)
        rest = buf[r:]
        if rest.startswith(HERMES_CLOSE):
            return call, r + len(HERMES_CLOSE)
        if HERMES_CLOSE.startswith(rest):  # nothing yet, or the start of the closing tag
            return (call, len(buf)) if final else _WAIT
        return call, end  # the closing tag is missing: the call still counts


class _Llama3Scanner:
    """JSON calls making up the start of the output, separated by ";", optionally after <|python_tag|>."""

    def __init__(self) -> None:
        self._buf = ""
        self._state = "start"  # "start": nothing decided; "calls": after a call; "text": the rest is content

    def scan(self, text: str, final: bool) -> list[tuple]:
        buf = self._buf + text
        if self._state == "text":
            self._buf = ""
            return [("text", buf)] if buf else []
        events: list[tuple] = []
        pos = 0
        while True:
            lead = PYTHON_TAG if self._state == "start" else ";"
            found = self._call(buf, pos, lead, final)
            if found is _WAIT:
                break
            if found is None:
                rest = buf[pos:]
                if self._state == "calls":  # the separator before text that is not a call is dropped
                    rest = rest.lstrip()
                    rest = rest[1:] if rest.startswith(";") else rest
                if rest:
                    events.append(("text", rest))
                pos = len(buf)
                self._state = "text"
                break
            events.append(("call", found[0]))
            pos = found[1]
            self._state = "calls"
        self._buf = buf[pos:]
        return events

    @staticmethod
    def _call(buf: str, pos: int, lead: str, final: bool):
        q = _skip_ws(buf, pos)
        if buf.startswith(lead, q):
            q = _skip_ws(buf, q + len(lead))
        elif not final and lead.startswith(buf[q:]):
            return _WAIT  # nothing yet, or the start of the lead
        return _json_call(buf, q, final)
