"""Incremental detokenization with stop strings, one instance per sequence.

Decoding token by token is wrong twice over: a byte-level token can hold half
of a UTF-8 character (it decodes to "\\ufffd" until the next token completes
it), and some tokenizers change how a token renders depending on what came
before it (leading-space handling).  So the text of each new token is decoded
once against a small window of already emitted tokens, and emitted only once
it no longer ends in a replacement character.

Two sources do that: the tokenizers library's native DecodeStream, where the
model has a fast tokenizer (the engine's case), and a window over an injected
`decode(ids)` function otherwise (no torch, no transformers needed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT_CHAR = "\ufffd"
# Enough previous tokens for the tokenizer to render the next one as it would
# inside the full text; the same bound vLLM uses.
CONTEXT_TOKENS = 5


class _NativeStream:
    """tokenizers' DecodeStream: each token decoded once, in native code."""

    def __init__(self, tokenizer, context_ids: Sequence[int], skip_special_tokens: bool,
                 decode: Callable[[list[int]], str]):
        from tokenizers.decoders import DecodeStream

        self._tokenizer = tokenizer
        self._decode = decode
        context = list(context_ids)[-CONTEXT_TOKENS:]
        if context and REPLACEMENT_CHAR in decode(context):
            context = []  # a context cut mid-character would misalign the stream
        self._stream = DecodeStream(context, skip_special_tokens=skip_special_tokens) if context else \
            DecodeStream(skip_special_tokens=skip_special_tokens)
        self._pending: list[int] = []  # tokens of a character not yet complete

    def step(self, token_id: int) -> str:
        chunk = self._stream.step(self._tokenizer, token_id)
        if chunk is None:
            self._pending.append(token_id)
            return ""
        self._pending.clear()
        return chunk

    def finish(self) -> str:
        # A character the generation never completed: as a full decode renders it.
        text = self._decode(self._pending) if self._pending else ""
        self._pending = []
        return text


class _Window:
    """The same over a plain decode(ids) function, re-decoding a window of recent tokens."""

    def __init__(self, decode: Callable[[list[int]], str], context_ids: Sequence[int]):
        self._decode = decode
        self._ids: list[int] = list(context_ids)[-CONTEXT_TOKENS:]
        if self._ids and REPLACEMENT_CHAR in decode(self._ids):
            # A context cut mid-character would misalign the offsets below.
            self._ids = []
        # ids[prefix:read] were already emitted and only serve as context;
        # ids[read:] are decoded but not emitted yet (incomplete UTF-8).
        self._prefix = 0
        self._read = len(self._ids)

    def step(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._take(final=False)

    def finish(self) -> str:
        return self._take(final=True)

    def _take(self, *, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        full_text = self._decode(self._ids[self._prefix :])
        if not final and (len(full_text) <= len(prefix_text) or full_text.endswith(REPLACEMENT_CHAR)):
            # Either a token that renders as nothing yet, or a character that
            # the next token may still complete: wait for more.
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        # Keep the window small: only the last few emitted tokens serve as context.
        if self._prefix > CONTEXT_TOKENS:
            cut = self._prefix - CONTEXT_TOKENS
            del self._ids[:cut]
            self._prefix -= cut
            self._read -= cut
        return full_text[len(prefix_text) :]


class IncrementalDetokenizer:
    """Feed token ids with push(); read safe text deltas; call flush() at the end.

    `decode(ids)` must decode a list of ids to text (special tokens skipped,
    no clean-up of spaces, or deltas would shift retroactively).
    `context_ids` are the ids just before the first generated token (the tail
    of the prompt), used only to render that token correctly.
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        stop: Sequence[str] = (),
        context_ids: Sequence[int] = (),
        include_stop: bool = False,
        *,
        native_tokenizer=None,
        skip_special_tokens: bool = True,
    ) -> None:
        """native_tokenizer: a `tokenizers.Tokenizer` to stream with (decode must then skip special
        tokens exactly when skip_special_tokens says so)."""
        if native_tokenizer is not None:
            self._source = _NativeStream(native_tokenizer, context_ids, skip_special_tokens, decode)
        else:
            self._source = _Window(decode, context_ids)
        self._stop = tuple(s for s in stop if s)
        self._include_stop = include_stop  # emit the stop string itself, then stop
        self._held = ""  # text that may be the start of a stop string
        self.stopped = False  # a stop string was completed; nothing more is emitted
        self.text = ""  # everything emitted so far

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text that is now safe to emit."""
        if self.stopped:
            return ""
        return self._apply_stop(self._source.step(token_id), final=False)

    def flush(self) -> str:
        """At the end of generation: release held text, partial characters included."""
        if self.stopped:
            return ""
        return self._apply_stop(self._source.finish(), final=True)

    def _apply_stop(self, delta: str, *, final: bool) -> str:
        buf = self._held + delta
        if not self._stop:
            self._held = ""
            return self._emit(buf)
        found = [(i, -len(s)) for s in self._stop if (i := buf.find(s)) >= 0]
        if found:
            cut, neg_len = min(found)  # the earliest stop string, the longest at that place
            self.stopped = True
            self._held = ""
            return self._emit(buf[: cut - neg_len if self._include_stop else cut])
        # Hold back the longest tail that could still grow into a stop string;
        # anything before it can never be part of one.
        hold = 0 if final else _longest_stop_prefix_suffix(buf, self._stop)
        self._held = buf[len(buf) - hold :]
        return self._emit(buf[: len(buf) - hold])

    def _emit(self, text: str) -> str:
        self.text += text
        return text


def _longest_stop_prefix_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best
