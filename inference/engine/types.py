"""Plain data passed between the API layer, the workers and the engine.

Deliberately free of torch and Django so request handlers can build these
without paying for (or depending on) the model stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"
FINISH_ERROR = "error"

MAX_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 => greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1 => off
    min_p: float = 0.0
    presence_penalty: float = 0.0  # OpenAI semantics, on generated tokens
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # CTRL/HF semantics, on prompt and generated tokens
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    seed: int | None = None  # same seed + same prompt + same params => same output
    stop: tuple[str, ...] = ()  # stop strings: never emitted, even when split across tokens
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    min_tokens: int = 0  # EOS and stop token ids are masked until this many tokens exist
    ignore_eos: bool = False
    n: int = 1  # choices sharing one prefill of the prompt
    logprobs: int | None = None  # None => off; else how many alternatives (0..20) besides the chosen token
    # None => off; else the log-probability of every prompt token after the first, with its rank and this many
    # most likely alternatives (0..20). Computed by a full prefill: such a request takes nothing from the prefix
    # cache. With max_tokens 0 the request ends after its prefill (a prompt scored, nothing generated).
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        # JSON hands us lists, and a bare string would otherwise be iterated as
        # one stop string per character.
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        stop = tuple(stop)
        if not all(isinstance(s, str) for s in stop):
            raise ValueError("stop must be a sequence of strings")
        object.__setattr__(self, "stop", tuple(s for s in stop if s))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        object.__setattr__(self, "logit_bias", {int(k): float(v) for k, v in dict(self.logit_bias).items()})
        if self.max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < -1:
            raise ValueError("top_k must be -1, 0 or positive")
        if not 0 <= self.min_p <= 1:
            raise ValueError("min_p must be in [0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if self.min_tokens < 0:
            raise ValueError("min_tokens must be >= 0")
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise ValueError(f"logprobs must be in [0, {MAX_LOGPROBS}]")
        if self.prompt_logprobs is not None and not 0 <= self.prompt_logprobs <= MAX_LOGPROBS:
            raise ValueError(f"prompt_logprobs must be in [0, {MAX_LOGPROBS}]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class TokenMask(Protocol):
    """Per-sequence constraint on the next token (structured output, forced tool calls).

    The engine asks `allowed()` before sampling each token and reports the token
    it chose with `accept()`. `allowed()` returns None for "no constraint now",
    or a boolean tensor/array of vocabulary size where True marks allowed ids.
    """

    def allowed(self): ...

    def accept(self, token_id: int) -> None: ...


CONSTRAINT_JSON_SCHEMA = "json_schema"  # source: a JSON Schema document, as JSON text
CONSTRAINT_EBNF = "ebnf"  # source: a grammar in xgrammar's EBNF dialect (root rule "root")


@dataclass(frozen=True)
class Constraint:
    """A grammar every choice of a request must follow: plain data, so it crosses the queue.

    The engine compiles it against its own tokenizer (inference.engine.grammar) into
    one TokenMask per choice; the output always parses, and ends (EOS) only once the
    grammar is complete.
    """

    kind: str  # CONSTRAINT_JSON_SCHEMA | CONSTRAINT_EBNF
    source: str

    def __post_init__(self) -> None:
        if self.kind not in (CONSTRAINT_JSON_SCHEMA, CONSTRAINT_EBNF):
            raise ValueError(f"unknown constraint kind {self.kind!r}")
        if not isinstance(self.source, str) or not self.source:
            raise ValueError("constraint source must be a non-empty string")


@dataclass
class GenerationRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    # Called once per choice to build that choice's mask state; None => unconstrained.
    token_mask_factory: object | None = None
    # A grammar the engine compiles into token_mask_factory (ignored when a factory is given).
    constraint: Constraint | None = None
    # Requests share prefix-cache blocks only with requests of the same salt (the API uses the
    # organization): one tenant's timing cannot reveal another's prompts.
    cache_salt: str | None = None
    # Further prompts answered by this request (a legacy completion's list of prompts), each run as if sent alone
    # with the same params: prompt i's choices are indices i*n .. i*n + n - 1; its events count every prompt.
    more_prompts: tuple[tuple[int, ...], ...] = ()

    @property
    def prompts(self) -> list[list[int]]:
        return [list(self.prompt_token_ids), *(list(p) for p in self.more_prompts)]

    @property
    def num_prompt_tokens(self) -> int:
        """What the request's usage counts as prompt tokens: every prompt's."""
        return len(self.prompt_token_ids) + sum(len(p) for p in self.more_prompts)


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()  # (token_id, token, logprob), most likely first
    rank: int | None = None  # 1 + how many tokens were more likely (prompt tokens' logprobs only)


@dataclass(frozen=True)
class TokenEvent:
    request_id: str
    text: str = ""  # new text of choice `index` since its previous event
    index: int = 0  # which choice (0..n-1; with more prompts, prompt i's are i*n .. i*n + n - 1) this event is about
    token_ids: tuple[int, ...] = ()  # the tokens this text came from (those not yet reported)
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token in token_ids, when requested
    # With params.prompt_logprobs, on the events of each prompt's first choice (index i*n): the next tokens' logprobs
    # of that prompt, in order from its second token (the first has none); all of them have come once that choice's
    # first event with a token or a finish reason has.
    prompt_logprobs: tuple[TokenLogprob, ...] = ()
    choice_finish_reason: str | None = None  # set on the last event of choice `index`
    finished: bool = False  # the last event of the whole request: exactly one per request
    finish_reason: str | None = None  # on the final event: "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int = 0  # the request's num_prompt_tokens, on every event
    completion_tokens: int = 0  # tokens sampled so far over all choices (EOS/stop tokens included)
    # Prompt tokens whose keys and values came from the prefix cache instead of being computed
    # (fixed when each prompt is first scheduled; 0 when nothing matched or the cache is off).
    cached_tokens: int = 0
    error: str | None = None  # message when finish_reason == "error"
    error_code: str | None = None  # machine-readable cause when finish_reason == "error" (e.g. "worker_lost")
