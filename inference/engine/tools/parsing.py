"""Tool calls out of model text: all at once (parse_tool_calls) or while it streams (ToolCallStream).

Both run the same scanner, which only commits to what no later text can change:
text that could still turn into a call is held back. A call whose JSON opens with
its name and then its arguments object ({"name": "f", "arguments": {...) is a call
from there on: its name is sent at once and its arguments as they come, as OpenAI
streams them (raw control characters inside strings escaped); cut off by the end of
the output (max_tokens), or, in the Hermes format, by a closing tag before its
arguments close, it keeps the arguments it has. A call written otherwise (the name
after the arguments, the arguments as a quoted JSON string) is reported once its
JSON is complete, and only if it is a call. So however the output is split into
pieces, the stream's deltas add up to exactly what parse_tool_calls returns for the
whole output.

Content rules, for both formats: with no call found, the content is the output
unchanged. With calls, the text around them is content, trimmed of whitespace next
to the calls, separate pieces joined by a newline. Text that is not a valid call
(unbalanced JSON, an unknown shape) stays content.
"""

from __future__ import annotations

import json

import regex

from .calls import (
    HERMES, HERMES_CLOSE, HERMES_OPEN, PYTHON_TAG, ParsedCall, call_from_json, check_format, object_end,
)

_WAIT = object()  # the scanner needs more text to decide
# The start of a call whose arguments can stream: its name, then its arguments object opening. Matched partially
# while the output could still become it.
_STREAMED_HEAD = regex.compile(
    r'\{\s*"name"\s*:\s*"((?:[^"\\\x00-\x1f]|\\.)+)"\s*,\s*"(?:arguments|parameters)"\s*:\s*\{')


def parse_tool_calls(tool_format: str, text: str) -> tuple[str | None, list[ParsedCall]]:
    """(content or None, calls) for a finished output of a model using `tool_format`."""
    stream = ToolCallStream(tool_format)
    deltas = stream.feed(text) + stream.finish()
    content = "".join(d["content"] for d in deltas if "content" in d)
    return (content or None), list(stream.calls)


class ToolCallStream:
    """Turns streamed output text into OpenAI chat-completion delta dicts.

    Content comes as {"content": ...}; each call as a first delta with its index, id,
    type and name (arguments ""), then deltas with pieces of its arguments.
    """

    def __init__(self, tool_format: str) -> None:
        check_format(tool_format)
        self._scanner = _HermesScanner() if tool_format == HERMES else _Llama3Scanner()
        self._shaper = _ContentShaper()
        self._finished = False
        self.calls: list[ParsedCall] = []  # the calls streamed so far, with the ids they were streamed with
        self._open: ParsedCall | None = None  # the call whose arguments are streaming (arguments: so far)

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
            elif kind == "call":  # a whole call at once
                self._head(out, value)
                self._arguments(out, value.arguments)
                self.calls.append(value)
            elif kind == "open":
                self._open = ParsedCall(name=value, arguments="")
                self._head(out, self._open)
            elif kind == "arguments":
                self._open = ParsedCall(self._open.name, self._open.arguments + value, self._open.id)
                self._arguments(out, value)
            else:  # "close"
                self.calls.append(self._open)
                self._open = None
        return out

    def _head(self, out: list[dict], call: ParsedCall) -> None:
        self._shaper.call()
        out.append({"tool_calls": [{"index": len(self.calls), "id": call.id, "type": "function",
                                    "function": {"name": call.name, "arguments": ""}}]})

    def _arguments(self, out: list[dict], piece: str) -> None:
        index = len(self.calls)
        last = out[-1]["tool_calls"][0] if out and "tool_calls" in out[-1] else None
        if last is not None and "id" not in last and last["index"] == index:
            last["function"]["arguments"] += piece  # one delta per call per feed
        else:
            out.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})


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


def _streamed_head(buf: str, q: int, final: bool):
    """(name, where its arguments object opens) when a call whose arguments can stream opens at buf[q], None
    when none does, _WAIT while the text so far could still become one."""
    m = _STREAMED_HEAD.match(buf, q, partial=not final)
    if m is None:
        return None
    if m.partial:
        return _WAIT
    try:
        name = json.loads(f'"{m.group(1)}"')
    except ValueError:
        return None
    return name, m.end() - 1


class _StreamedCall:
    """A call past its head: its arguments object as it comes, then the rest of its JSON and, in the Hermes format,
    its closing tag.

    read() appends ("arguments", text) and finally ("close", None) events. Brackets outside strings find the
    arguments' end; raw control characters inside strings are escaped (JSON forbids them there). `close`, outside
    a string, ends the call even before its arguments close (a model that skipped a brace)."""

    def __init__(self, close: str | None) -> None:
        self._close = close
        self._depth = 0  # of brackets outside strings, from the arguments' opening brace
        self._in_string = self._escaped = False
        self._closed = False  # the arguments object is complete: its call's brace and tag may follow

    def read(self, buf: str, pos: int, final: bool, events: list) -> tuple[int, bool]:
        """(where reading stopped, whether the call ended there)."""
        if not self._closed:
            pos, why = self._arguments(buf, pos, final, events)
            if why == "stop":  # the closing tag: the call ends with what it has
                events.append(("close", None))
                return pos + len(self._close), True
            if why is None:
                if final:  # cut off: the call keeps the arguments it has
                    events.append(("close", None))
                    return len(buf), True
                return pos, False
            self._closed = True
        end = self._tail(buf, pos, final)
        if end is _WAIT:
            return pos, False
        events.append(("close", None))
        return end, True

    def _arguments(self, buf: str, pos: int, final: bool, events: list) -> tuple[int, str | None]:
        out = []
        i, n, stop = pos, len(buf), self._close
        why = None
        while i < n:
            ch = buf[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
                elif ch < " ":
                    ch = f"\\u{ord(ch):04x}"
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    out.append(ch)
                    i, why = i + 1, "closed"
                    break
            elif stop is not None and ch == stop[0]:
                if buf.startswith(stop, i):
                    why = "stop"
                    break
                if not final and stop.startswith(buf[i:]):
                    break  # perhaps the closing tag: wait
            out.append(ch)
            i += 1
        if out:
            events.append(("arguments", "".join(out)))
        return i, why

    def _tail(self, buf: str, pos: int, final: bool):
        q = _skip_ws(buf, pos)
        if q == len(buf):
            return len(buf) if final else _WAIT
        if buf[q] == "}":
            q += 1
        elif buf[q] == ",":  # more keys after the arguments: the object ends at its brace
            end = object_end(buf, q, depth=1)
            if end is None:
                return len(buf) if final else _WAIT
            q = end
        # else its brace is missing: the call ends with its arguments
        if self._close is None:
            return q
        r = _skip_ws(buf, q)
        rest = buf[r:]
        if rest.startswith(self._close):
            return r + len(self._close)
        if self._close.startswith(rest):
            return len(buf) if final else _WAIT
        return q


class _HermesScanner:
    """<tool_call> {json} </tool_call> blocks anywhere in the text."""

    def __init__(self) -> None:
        self._buf = ""
        self._streaming: _StreamedCall | None = None

    def scan(self, text: str, final: bool) -> list[tuple]:
        buf = self._buf + text
        events: list[tuple] = []
        pos = 0
        while True:
            if self._streaming is not None:
                pos, ended = self._streaming.read(buf, pos, final, events)
                if not ended:
                    break
                self._streaming = None
                continue
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
            head = _streamed_head(buf, _skip_ws(buf, i + len(HERMES_OPEN)), final)
            if head is _WAIT:
                break
            if head is not None:
                events.append(("open", head[0]))
                self._streaming = _StreamedCall(HERMES_CLOSE)
                pos = head[1]
                continue
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
        self._streaming: _StreamedCall | None = None

    def scan(self, text: str, final: bool) -> list[tuple]:
        buf = self._buf + text
        if self._state == "text":
            self._buf = ""
            return [("text", buf)] if buf else []
        events: list[tuple] = []
        pos = 0
        while True:
            if self._streaming is not None:
                pos, ended = self._streaming.read(buf, pos, final, events)
                if not ended:
                    break
                self._streaming = None
                self._state = "calls"
                continue
            lead = PYTHON_TAG if self._state == "start" else ";"
            q = self._call_start(buf, pos, lead, final)
            head = _WAIT if q is _WAIT else _streamed_head(buf, q, final)
            if head is _WAIT:
                break
            if head is not None:
                events.append(("open", head[0]))
                self._streaming = _StreamedCall(None)
                pos = head[1]
                continue
            found = _json_call(buf, q, final)
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
    def _call_start(buf: str, pos: int, lead: str, final: bool):
        """Where the next call's JSON would open, past whitespace and the lead; _WAIT while the lead may follow."""
        q = _skip_ws(buf, pos)
        if buf.startswith(lead, q):
            return _skip_ws(buf, q + len(lead))
        if not final and lead.startswith(buf[q:]):
            return _WAIT  # nothing yet, or the start of the lead
        return q
