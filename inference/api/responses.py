"""Turning a generation's token events into an OpenAI response: whole, or as a stream.

Each choice (n > 1) is followed on its own: its text, its logprobs, and, when
tools are in play, the tool calls parsed out of its text in the model's format.
"""
import secrets
from typing import NamedTuple

from django.http import JsonResponse

from core.errors import json_response, sse_event
from inference.api import chunks
from inference.chat.errors import generation_failed
from inference.chat.generation import Generation
from inference.chat.prepare import PreparedChat
from inference.chat.request import TOOL_CHOICE_NAMED, ChatRequest

_OK = ("stop", "length")


def _finish_reason(reason: str | None, called: bool, chat: ChatRequest) -> str | None:
    # OpenAI answers "tool_calls" when the model chose to call; a call forced by name ends with "stop".
    if reason == "stop" and called and chat.tool_choice.mode != TOOL_CHOICE_NAMED:
        return "tool_calls"
    return reason


def _openai_call(call) -> dict:
    call_id = getattr(call, "id", None) or "call_" + secrets.token_hex(12)
    return {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


class Gathered(NamedTuple):
    texts: list[str]  # per choice
    logprobs: list[list]  # per choice: its tokens' TokenLogprob
    reasons: list[str | None]  # per choice: its finish reason
    final: object  # the final TokenEvent
    # Per choice, with prompt logprobs: TokenLogprob of its prompt's tokens after the first (on each prompt's first
    # choice only: prompt_logprobs[i * n] for prompt i).
    prompt_logprobs: list[list]
    token_ids: list[list[int]]  # per choice: the tokens it generated (EOS and stop tokens included)


async def gather(generation: Generation, n: int, echo_prefixes: list[str]) -> Gathered:
    """Every choice's events, to the final one: n choices for each prompt (each prompt has an echo prefix)."""
    total = n * len(echo_prefixes)
    texts = [[echo_prefixes[i // n]] for i in range(total)]
    logprobs = [[] for _ in range(total)]
    reasons: list[str | None] = [None] * total
    prompt_logprobs = [[] for _ in range(total)]
    token_ids = [[] for _ in range(total)]
    try:
        while True:
            event = await generation.events.get()
            if event.index < total:
                prompt_logprobs[event.index].extend(event.prompt_logprobs)
                texts[event.index].append(event.text)
                token_ids[event.index].extend(event.token_ids)
                logprobs[event.index].extend(event.logprobs)
                if event.choice_finish_reason is not None:
                    reasons[event.index] = event.choice_finish_reason
            if event.finished:
                break
    finally:
        generation.cancel()  # no-op once finished; stops the run if the client went away
    return Gathered(["".join(parts) for parts in texts], logprobs, reasons, event, prompt_logprobs, token_ids)


async def collect(generation: Generation, chat: ChatRequest, prepared: PreparedChat, *, request_id: str,
                  created: int, extra: dict):
    """The whole completion as one JSON body; (response, choices or None on failure)."""
    texts, logprobs, reasons, event, prompt_logprobs, token_ids = await gather(generation, chat.n,
                                                                               prepared.echo_prefixes)
    as_ids = chat.return_tokens_as_token_ids
    if event.finish_reason not in _OK:
        return json_response(generation_failed(event)), None
    choices = []
    for i in range(chat.n):
        text, tool_calls = texts[i], None
        if prepared.tool_format:
            from inference.engine.tools import parse_tool_calls

            content, calls = parse_tool_calls(prepared.tool_format, text)
            if calls:
                text, tool_calls = content, [_openai_call(call) for call in calls]
        choices.append({
            "index": i,
            "message": chunks.message(text, tool_calls),
            "logprobs": {"content": chunks.logprobs_content(chunks.as_token_ids(logprobs[i], as_ids)), "refusal": None}
            if chat.logprobs else None,
            "finish_reason": _finish_reason(reasons[i] or event.finish_reason, bool(tool_calls), chat),
        })
        if chat.return_token_ids:
            choices[-1]["token_ids"] = token_ids[i]
    if chat.return_token_ids:
        extra = {**extra, "prompt_token_ids": prepared.prompt_ids}
    if chat.prompt_logprobs is not None:
        extra = {**extra, "prompt_logprobs": chunks.prompt_logprobs(chunks.as_token_ids(prompt_logprobs[0], as_ids))}
    body = chunks.completion(id=request_id, created=created, model=chat.model, choices=choices,
                             prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
                             cached_tokens=event.cached_tokens, extra=extra)
    return JsonResponse(body), choices


class _StreamChoice:
    """One choice of a stream: turns its text into content or tool-call deltas."""

    def __init__(self, index: int, prepared: PreparedChat):
        self.index = index
        self.tools = None
        if prepared.tool_format:
            from inference.engine.tools import ToolCallStream

            self.tools = ToolCallStream(prepared.tool_format)
        self.content: list[str] = []
        self.tool_calls: dict[int, dict] = {}

    def deltas(self, text: str) -> list[dict]:
        found = self.tools.feed(text) if self.tools is not None else ([{"content": text}] if text else [])
        self._record(found)
        return found

    def finish(self) -> list[dict]:
        found = self.tools.finish() if self.tools is not None else []
        self._record(found)
        return found

    def _record(self, deltas: list[dict]) -> None:
        for delta in deltas:
            if delta.get("content"):
                self.content.append(delta["content"])
            for call in delta.get("tool_calls", ()):
                whole = self.tool_calls.setdefault(call["index"], {"id": call.get("id"), "type": "function",
                                                                     "function": {"name": "", "arguments": ""}})
                function = call.get("function", {})
                whole["function"]["name"] += function.get("name") or ""
                whole["function"]["arguments"] += function.get("arguments") or ""

    def as_choice(self) -> dict:
        calls = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return {"message": chunks.message("".join(self.content) if not calls or self.content else None, calls)}


async def stream(generation: Generation, chat: ChatRequest, prepared: PreparedChat, writer: chunks.ChunkWriter,
                 on_complete=None):
    """SSE bytes; on_complete(choices) is awaited after a successful end, before [DONE].

    A stream that fails ends with its error event, then with include_usage its usage chunk (`choices` empty,
    the tokens counted until it failed), then `data: [DONE]`, like one that finishes."""
    states = [_StreamChoice(i, prepared) for i in range(chat.n)]
    want_logprobs, want_ids, as_ids = chat.logprobs, chat.return_token_ids, chat.return_tokens_as_token_ids
    try:
        for state in states:
            yield writer.choice({"role": "assistant", "content": ""}, index=state.index,
                                logprobs=[] if want_logprobs else None, token_ids=[] if want_ids else None,
                                prompt_token_ids=prepared.prompt_ids if want_ids and state.index == 0 else None)
            if prepared.echo_prefix:
                for delta in state.deltas(prepared.echo_prefix):
                    yield writer.choice(delta, index=state.index)
        while True:
            event = await generation.events.get()
            if event.index < chat.n:
                state = states[event.index]
                entries = chunks.logprobs_content(chunks.as_token_ids(event.logprobs, as_ids)) if want_logprobs \
                    else None
                ids = list(event.token_ids) if want_ids else None
                deltas = state.deltas(event.text) if event.text else []
                if (entries or ids) and not deltas:
                    deltas = [{"content": ""}]  # the tokens' logprobs and ids travel even when their text is held back
                for j, delta in enumerate(deltas):
                    yield writer.choice(delta, index=state.index, logprobs=entries if j == 0 else None,
                                        token_ids=(ids if j == 0 else []) if want_ids else None)
                if event.choice_finish_reason is not None and event.finish_reason in (None, *_OK):
                    for delta in state.finish():
                        yield writer.choice(delta, index=state.index)
                    if event.choice_finish_reason in _OK:
                        reason = _finish_reason(event.choice_finish_reason, bool(state.tool_calls), chat)
                        yield writer.choice({}, reason, index=state.index)
            if event.finished:
                break
        if event.finish_reason not in _OK:
            # The error, then, when asked for, the usage of what was generated (exactly what was counted), then
            # [DONE]: a failed stream ends like any other.
            yield sse_event(generation_failed(event))
            if writer.include_usage:
                yield writer.usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
            yield writer.done()
            return
        if writer.include_usage:
            yield writer.usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
        if on_complete is not None:
            await on_complete([state.as_choice() for state in states])
        yield writer.done()
    finally:
        generation.cancel()
