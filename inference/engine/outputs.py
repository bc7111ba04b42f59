"""Per-request bookkeeping on the engine thread: choices, their text, their events.

A request becomes one sequence per choice (n > 1 forks after the shared
prefill; each of several prompts has its own n). Each choice owns its
detokenizer, RNG and token mask; the request ends, with exactly one final
event, when its last choice ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .detokenizer import IncrementalDetokenizer
from .sequence import Sequence
from .types import FINISH_ERROR, GenerationRequest, TokenEvent, TokenLogprob


@dataclass(eq=False)
class Choice:
    seq: Sequence
    detok: IncrementalDetokenizer
    generator: object | None  # torch.Generator
    mask: object | None  # TokenMask
    finish_reason: str | None = None
    # What the next event will carry.
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)  # its prompt's (first choices only)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(eq=False)
class RequestState:
    request: GenerationRequest
    on_event: Callable[[TokenEvent], None]
    choices: list[Choice] = field(default_factory=list)
    completion_tokens: int = 0
    done: bool = False

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens each prompt's first choice found in the prefix cache when first admitted."""
        return sum(c.seq.num_cached_tokens or 0 for c in self.choices if c.seq.first_of_prompt)

    def events(self, changed: list[Choice], *, error: str | None = None) -> list[TokenEvent]:
        """Events for the choices that changed this step; the last one closes the request if all choices ended."""
        pending = [c for c in changed if c.text or c.token_ids or c.finished]
        all_done = all(c.finished for c in self.choices)
        events = []
        for i, choice in enumerate(pending):
            last = all_done and i == len(pending) - 1 and not self.done
            events.append(TokenEvent(
                prompt_logprobs=tuple(choice.prompt_logprobs),
                request_id=self.request_id,
                index=choice.seq.index,
                text=choice.text,
                token_ids=tuple(choice.token_ids),
                logprobs=tuple(choice.logprobs),
                choice_finish_reason=choice.finish_reason,
                finished=last,
                finish_reason=choice.finish_reason if last else None,
                prompt_tokens=self.request.num_prompt_tokens,
                completion_tokens=self.completion_tokens,
                cached_tokens=self.cached_tokens,
                error=error if last and choice.finish_reason == FINISH_ERROR else None,
            ))
            choice.text, choice.token_ids, choice.logprobs, choice.prompt_logprobs = "", [], [], []
            if last:
                self.done = True
        if all_done and not self.done:  # every choice had already reported: close with an empty event
            reason = self.choices[-1].finish_reason if self.choices else FINISH_ERROR
            events.append(TokenEvent(request_id=self.request_id, finished=True, finish_reason=reason,
                                     prompt_tokens=self.request.num_prompt_tokens,
                                     completion_tokens=self.completion_tokens, cached_tokens=self.cached_tokens,
                                     error=error if reason == FINISH_ERROR else None))
            self.done = True
        return events
