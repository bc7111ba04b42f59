"""Plain data passed between the API layer and the engine.

Deliberately free of torch and Django so request handlers can build these
without paying for (or depending on) the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"
FINISH_ERROR = "error"


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 => greedy
    top_p: float = 1.0
    seed: int | None = None  # same seed + same prompt + same params => same output
    stop: tuple[str, ...] = ()  # stop strings: never emitted, even when split across tokens

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
        if self.max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


@dataclass
class GenerationRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class TokenEvent:
    request_id: str
    text: str = ""  # new text since the previous event of this request
    finished: bool = False
    finish_reason: str | None = None  # "stop" (EOS or stop string) | "length" | "cancelled" | "error"
    prompt_tokens: int = 0  # len(prompt_token_ids), on every event
    completion_tokens: int = 0  # tokens sampled so far (including an EOS/stop token that ended it)
    error: str | None = None  # message when finish_reason == "error"
