"""Grammar-constrained decoding: a `Constraint` compiled by xgrammar into per-choice token masks.

`GrammarCompiler` is bound to one model's tokenizer and vocabulary. Compiling a
constraint takes up to about a second (cached, bounded, per (kind, source)), so
it runs in the caller's thread (`Engine.prepare`), never on the engine loop or
an event loop; xgrammar releases the GIL while it compiles. Some schemas take
minutes: with a deadline, compiles run in a child process that is stopped at it
(`grammar_process`). Each choice then
gets its own `GrammarMask`, whose `allowed()` / `accept()` cost microseconds
per step.

`check_constraint` needs no tokenizer: the API process calls it before any
credit is held, so a schema xgrammar cannot handle is a 400, not a failed
generation. Importing this module is cheap (no torch, numpy or xgrammar);
the first check or compile imports xgrammar, and with it torch (seconds).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from .grammar_rules import CompileTimeout, compile_with
from .types import CONSTRAINT_EBNF, CONSTRAINT_JSON_SCHEMA, Constraint

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 64  # compiled grammars kept per compiler (a few hundred KB to a few MB each)


class GrammarCompiler:
    """Compiles constraints for one tokenizer and model vocabulary; thread-safe.

    With `compile_timeout_s`, compiles run in a child process that is stopped at that deadline
    (grammar_process): the compile fails with CompileTimeout, and so does the same constraint
    again while it stays in the cache. Without, they run in the caller's thread, unbounded.
    """

    def __init__(self, hf_tokenizer, *, eos_token_ids: Iterable[int], vocab_size: int,
                 cache_size: int = DEFAULT_CACHE_SIZE, max_threads: int | None = None,
                 compile_timeout_s: float | None = None) -> None:
        import xgrammar as xgr

        self.vocab_size = int(vocab_size)  # the model's: masks have exactly this many entries
        self.stop_token_ids = sorted(int(t) for t in eos_token_ids)
        # The tokenizer may know fewer ids than the model has logits (padding), never more in practice;
        # the grammar's vocabulary covers both.
        grammar_vocab = max(self.vocab_size, len(hf_tokenizer))
        info = xgr.TokenizerInfo.from_huggingface(hf_tokenizer, vocab_size=grammar_vocab,
                                                  stop_token_ids=self.stop_token_ids)
        self._compiler = xgr.GrammarCompiler(info, max_threads=max_threads or min(8, os.cpu_count() or 1),
                                             cache_enabled=False)  # our own bounded cache below
        stops = set(self.stop_token_ids)
        special = _special_ids(hf_tokenizer) - stops
        # JSON never contains a raw control character (compact separators, escaped strings), but
        # xgrammar's rule for length-bounded strings lets them through: block those tokens for JSON.
        control = {i for i, piece in enumerate(info.decoded_vocab) if piece and min(piece) < 0x20} - stops
        self._keep = {CONSTRAINT_EBNF: _keep_words(special, grammar_vocab),
                      CONSTRAINT_JSON_SCHEMA: _keep_words(special | control, grammar_vocab)}
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], Future] = OrderedDict()
        self._lock = threading.Lock()
        self.process = None
        if compile_timeout_s is not None:
            from .grammar_process import CompileProcess

            self.process = CompileProcess(info, timeout_s=compile_timeout_s, max_threads=max_threads)

    @classmethod
    def for_tokenizer(cls, tokenizer, vocab_size: int, **kwargs) -> "GrammarCompiler":
        """From a ChatTokenizer: its eos ids are the grammar's stop tokens."""
        return cls(tokenizer.hf_tokenizer, eos_token_ids=tokenizer.eos_token_ids, vocab_size=vocab_size, **kwargs)

    def mask_factory(self, constraint: Constraint) -> Callable[[], "GrammarMask"]:
        """A factory of fresh per-choice masks; blocking (compiles on a cache miss). Raises GrammarError."""
        compiled = self.compile(constraint)
        import xgrammar as xgr

        template = xgr.GrammarMatcher(compiled, override_stop_tokens=self.stop_token_ids)
        keep = self._keep[constraint.kind]

        def factory() -> GrammarMask:
            return GrammarMask(template.fork(), self.vocab_size, keep)

        return factory

    def compile(self, constraint: Constraint):
        """The xgrammar CompiledGrammar of `constraint`, from the cache when it is there."""
        key = (constraint.kind, constraint.source)
        with self._lock:
            future = self._cache.get(key)
            owner = future is None
            if owner:  # concurrent callers of one key wait for this compile instead of repeating it
                future = self._cache[key] = Future()
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
        if not owner:
            return future.result()
        try:
            compiled = self._compile(constraint)
        except BaseException as exc:
            with self._lock:
                # Errors are not kept (check_constraint is the cheap way to find them), except a compile
                # stopped at its deadline: the same constraint would take as long again.
                if self._cache.get(key) is future and not isinstance(exc, CompileTimeout):
                    del self._cache[key]
            future.set_exception(exc)
            raise
        future.set_result(compiled)
        return compiled

    def _compile(self, constraint: Constraint):
        if self.process is not None:
            return self.process.compile(constraint.kind, constraint.source)
        return compile_with(self._compiler, constraint.kind, constraint.source)

    def close(self) -> None:
        """Stop the compile process, if there is one."""
        if self.process is not None:
            self.process.close()


class GrammarMask:
    """One choice's grammar state: the TokenMask the engine asks before and tells after each token.

    Once the grammar is complete only the stop (EOS) tokens are allowed. A token
    the grammar rejects (the sampler's fallback when a mask leaves nothing
    sampleable) ends the constraint for this choice with a warning.
    """

    def __init__(self, matcher, vocab_size: int, keep: np.ndarray) -> None:
        import numpy
        import torch
        import xgrammar as xgr

        self._np, self._torch = numpy, torch
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._keep = keep  # int32 words: the bits of tokens a grammar may ever allow
        self._bitmask = xgr.allocate_token_bitmask(1, keep.shape[0] * 32)  # [1, words] int32, CPU
        self._words = self._bitmask.numpy().reshape(-1)  # the same memory
        self.active = True

    def allowed(self) -> torch.Tensor | None:
        """Bool [vocab_size], True where the grammar allows the token; None when unconstrained."""
        if not self.active or self._matcher.is_terminated():
            return None
        np, torch = self._np, self._torch
        self._matcher.fill_next_token_bitmask(self._bitmask)
        np.bitwise_and(self._words, self._keep, out=self._words)
        # Token i is bit i % 32 of word i // 32; words are little-endian int32 on every host we run on.
        bits = np.unpackbits(self._words.view(np.uint8), count=self._vocab_size, bitorder="little")
        return torch.from_numpy(bits).view(torch.bool)  # [vocab_size], no copy

    def accept(self, token_id: int) -> None:
        if not self.active:
            return
        if self._matcher.is_terminated():  # tokens after EOS (ignore_eos): nothing left to constrain
            self.active = False
            return
        if not self._matcher.accept_token(int(token_id)):
            log.warning("token %d breaks the grammar; the rest of this choice is unconstrained", token_id)
            self.active = False

    @property
    def completed(self) -> bool:
        """The text so far is a complete sentence of the grammar."""
        return self._matcher.is_completed()


def _special_ids(hf_tokenizer) -> set[int]:
    """Control tokens (chat markers and the like): never part of constrained text."""
    ids = set(getattr(hf_tokenizer, "all_special_ids", ()) or ())
    for token_id, added in (getattr(hf_tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return ids


def _keep_words(blocked: set[int], vocab_size: int) -> np.ndarray:
    """Bitmask words with every bit set except those of `blocked` ids."""
    import numpy as np

    bits = np.ones(-(-vocab_size // 32) * 32, dtype=np.uint8)
    bits[[i for i in blocked if 0 <= i < vocab_size]] = 0
    return np.packbits(bits, bitorder="little").view(np.int32).copy()
