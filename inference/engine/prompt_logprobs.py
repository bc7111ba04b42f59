"""Log-probabilities of prompt tokens (vLLM's `prompt_logprobs`, the legacy completions' `echo` with `logprobs`).

The hidden state at position p predicts the token at p + 1, so a prefill chunk that covers positions [a, b) of a
prompt of P tokens scores the prompt tokens a + 1 .. min(b, P - 1): each one's log-probability under the model's
raw logits (as sampled tokens' logprobs are), its rank (1 + how many tokens were more likely) and the k most likely
tokens. The chunk's rows go through the output layer a slice at a time, so a 4,000-token prompt never holds more
than SLICE_ROWS rows of vocabulary-wide logits.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .sequence import Sequence

SLICE_ROWS = 128  # float32 logits of 128 rows x a 49k vocabulary: 25 MB


@dataclass(frozen=True)
class Span:
    """Prompt tokens a step scores for one sequence: rows [row, row + count) of the step's packed rows, which sit at
    positions [first, first + count) of the sequence."""

    seq: Sequence
    row: int
    first: int
    count: int


@dataclass(frozen=True)
class PromptScore:
    token_id: int
    logprob: float
    rank: int
    top: tuple[tuple[int, float], ...]  # the k most likely (token_id, logprob), most likely first


def plan(items) -> list[Span]:
    """The spans a step owes, from its scheduled items in packed order (decodes first, then prefill chunks)."""
    spans, row = [], 0
    for item in items:
        seq = item.seq
        if seq.scores_prompt:
            first = max(item.start, seq.num_prompt_logprobs)  # a recomputed prefill does not score twice
            last = min(item.start + item.num_new_tokens, seq.num_prompt_tokens - 1)
            if last > first:
                spans.append(Span(seq, row + first - item.start, first, last - first))
        row += item.num_new_tokens
    return spans


def score(hidden: torch.Tensor, logits_of: Callable[[torch.Tensor], torch.Tensor],
          spans: list[Span]) -> dict[int, list[PromptScore]]:
    """seq_id -> the scores of its span, in position order. `logits_of` maps hidden rows to float32 logits."""
    out: dict[int, list[PromptScore]] = {}
    for span in spans:
        seq, k = span.seq, span.seq.params.prompt_logprobs
        targets = seq.prompt_token_ids[span.first + 1:span.first + 1 + span.count]
        scores = out.setdefault(seq.seq_id, [])
        for start in range(0, span.count, SLICE_ROWS):
            stop = min(span.count, start + SLICE_ROWS)
            logits = logits_of(hidden[span.row + start:span.row + stop])
            target = torch.tensor(targets[start:stop], dtype=torch.long, device=logits.device).unsqueeze(1)
            norm = torch.logsumexp(logits, dim=-1, keepdim=True)
            chosen = logits.gather(1, target)
            rank = (logits > chosen).sum(dim=1, keepdim=True)
            parts = [target.to(logits.dtype), chosen - norm, (rank + 1).to(logits.dtype)]
            if k:
                values, ids = logits.topk(k, dim=-1)
                parts += [ids.to(logits.dtype), values - norm]
            # One copy to the host per slice. Token ids and ranks are exact in float32 below 2**24.
            rows = torch.cat(parts, dim=1).cpu().tolist()
            for values in rows:
                top = tuple(zip((int(i) for i in values[3:3 + k]), values[3 + k:])) if k else ()
                scores.append(PromptScore(int(values[0]), values[1], int(values[2]), top))
    return out
