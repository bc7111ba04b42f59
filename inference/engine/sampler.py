"""Batched next-token selection for continuous batching: one call per decode
step handles every sequence's logits, each row with its own SamplingParams.

Per row, in vLLM's order: logprobs from the raw logits; logit_bias; min_tokens;
token mask; repetition / presence / frequency penalties; then greedy argmax, or
temperature, top-k, top-p, min-p and a draw from the row's own generator.

Rows are grouped by the features they use, so a step of plain greedy and plain
temperature rows pays only for argmax / softmax-and-draw. Sampling is an
inverse-CDF draw with ONE uniform per row from that row's generator: the token
depends only on the row's logits, params and seed, never on its batch
neighbours or position (an exponential race would need V random numbers per
row: ~0.3 s per 256 x 50k step on CPU instead of a few ms).

Not thread-safe: the sampler reuses one float32 workspace of [rows, V] between
calls (allocating 50-150 MB per step costs more than the maths on CPU).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .logits import (
    NEG_INF,
    PromptIdCache,
    apply_logit_bias,
    apply_penalties,
    apply_token_masks,
    block_tokens,
    top_k_threshold,
    top_p_threshold,
)
from .types import SamplingParams, TokenMask

# The draw first picks a block of BLOCK ids by cumulative block mass, then an
# id inside it, so only [rows, V / BLOCK] and [rows, BLOCK] cumsums are needed.
BLOCK = 256
# Below this, x / temperature overflows float32 for ordinary logits; the
# distribution is one-hot at such temperatures anyway.
MIN_TEMPERATURE = 1e-5


@dataclass
class SamplingRow:
    params: SamplingParams
    prompt_token_ids: Sequence[int]
    output_token_ids: Sequence[int]  # generated so far by this sequence (before this step's token)
    generator: torch.Generator | None  # per-sequence RNG; None => the sampler's shared generator
    eos_token_ids: frozenset[int]
    token_mask: TokenMask | None = None  # allowed() is asked here; accept() is the engine's job


@dataclass
class SampleResult:
    token_id: int
    logprob: float | None  # log-probability of token_id under the raw logits, when params.logprobs is not None
    top: list[tuple[int, float]]  # the params.logprobs most likely (token_id, logprob), most likely first


class Sampler:
    def __init__(self, vocab_size: int, device: torch.device | str = "cpu", seed: int | None = None) -> None:
        self.vocab_size = int(vocab_size)
        self.device = torch.device(device)
        self.generator = self.make_generator(seed)  # rows without their own generator
        self._workspace: torch.Tensor | None = None
        self._prompt_ids = PromptIdCache()

    def make_generator(self, seed: int | None) -> torch.Generator:
        """A private RNG per sequence, so a seed replays whatever else is batched.

        Always a CPU generator: a row draws one scalar per step, and one host
        to device copy of all of them beats a kernel launch per row.
        """
        gen = torch.Generator(device="cpu")
        gen.manual_seed(secrets.randbits(63) if seed is None else seed % (1 << 64))
        return gen

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]) -> list[SampleResult]:
        if logits.dim() != 2 or logits.shape[0] != len(rows):
            raise ValueError(f"logits {tuple(logits.shape)} do not match {len(rows)} rows")
        if not rows:
            return []
        vocab = min(self.vocab_size, logits.shape[1])
        raw = logits[:, :vocab]  # [B, V]; ids >= vocab_size are lm_head padding. Never written to.

        masks: dict[int, object] = {}
        for i, row in enumerate(rows):
            if row.token_mask is not None and (allowed := row.token_mask.allowed()) is not None:
                masks[i] = allowed

        greedy: list[int] = []  # argmax straight on the raw logits
        work_greedy: list[int] = []  # processed, then argmax
        sampled: list[int] = []
        for i, row in enumerate(rows):
            if row.params.temperature != 0:
                sampled.append(i)
            elif i in masks or _needs_processing(row):
                work_greedy.append(i)
            else:
                greedy.append(i)

        tokens = torch.empty(len(rows), dtype=torch.long, device=raw.device)  # [B]
        if greedy:
            tokens[greedy] = _argmax_rows(raw, greedy)
        work = sampled + work_greedy  # workspace rows: sampled first, so they are a contiguous slice
        if work:
            scores = self._load(raw, work)  # [W, Vpad] float32, owned
            self._process(scores, [rows[i] for i in work], [masks.get(i) for i in work], vocab)
            n_sampled = len(sampled)
            if work_greedy:
                tokens[work_greedy] = scores[n_sampled:].argmax(dim=-1)
            if sampled:
                tokens[sampled] = self._sample(scores[:n_sampled], [rows[i] for i in sampled], vocab)
        self._prompt_ids.end_call()
        return _results(raw, rows, tokens)

    def _load(self, raw: torch.Tensor, work: list[int]) -> torch.Tensor:
        """Copy rows `work` of raw [B, V] into the float32 workspace [W, Vpad], padding with -inf."""
        n, vocab = len(work), raw.shape[1]
        width = -(-vocab // BLOCK) * BLOCK
        ws = self._workspace
        if ws is None or ws.shape[0] < n or ws.shape[1] != width or ws.device != raw.device:
            ws = self._workspace = torch.empty(n, width, dtype=torch.float32, device=raw.device)
        scores = ws[:n]  # [W, Vpad], contiguous
        if work == list(range(raw.shape[0])):
            scores[:, :vocab].copy_(raw)
        else:
            scores[:, :vocab].copy_(raw[torch.tensor(work, device=raw.device)])
        if width > vocab:
            scores[:, vocab:].fill_(NEG_INF)
        return scores

    def _process(self, scores: torch.Tensor, rows: list[SamplingRow], masks: list, vocab: int) -> None:
        """Steps 2-5 in place on scores [W, Vpad]: logit_bias, min_tokens, token mask, penalties."""
        biases = [(j, r.params.logit_bias) for j, r in enumerate(rows) if r.params.logit_bias]
        if biases:
            apply_logit_bias(scores, biases, vocab)
        blocked = [(j, _min_tokens_blocked(r)) for j, r in enumerate(rows)]
        blocked = [(j, ids) for j, ids in blocked if ids]
        if blocked:
            block_tokens(scores, blocked, vocab)
        with_mask = [(j, m) for j, m in enumerate(masks) if m is not None]
        if with_mask:
            apply_token_masks(scores, with_mask, vocab)
        penalised = [j for j, r in enumerate(rows) if _has_penalty(r)]
        if penalised:
            apply_penalties(
                scores,
                penalised,
                [
                    self._prompt_ids.get(rows[j].prompt_token_ids, vocab, scores.device)
                    if rows[j].params.repetition_penalty != 1.0
                    else None
                    for j in penalised
                ],
                [rows[j].output_token_ids for j in penalised],
                [rows[j].params.repetition_penalty for j in penalised],
                [rows[j].params.presence_penalty for j in penalised],
                [rows[j].params.frequency_penalty for j in penalised],
                vocab,
            )

    def _sample(self, scores: torch.Tensor, rows: list[SamplingRow], vocab: int) -> torch.Tensor:
        """Temperature, top-k, top-p, min-p and one draw per row; scores [S, Vpad] is consumed -> ids [S]."""
        device = scores.device
        temps = [max(r.params.temperature, MIN_TEMPERATURE) for r in rows]
        if any(t != 1.0 for t in temps):
            scores.div_(torch.tensor(temps, dtype=scores.dtype, device=device).unsqueeze(1))
        # Unnormalised probabilities with the row max at exactly 1: no division
        # by the sum is needed to filter or to draw.
        weights = scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()  # [S, Vpad], padding -> 0

        top_k = [(j, r.params.top_k) for j, r in enumerate(rows) if 0 < r.params.top_k < vocab]
        if top_k:
            idx, sub = _subset(weights, [j for j, _ in top_k])
            k = torch.tensor([k for _, k in top_k], device=device)  # [R]
            sub.masked_fill_(sub < top_k_threshold(sub, k), 0.0)
            _store(weights, idx, sub)
        # top-p and min-p both drop weights below a per-row threshold; the max
        # weight is 1 whatever top-k/top-p dropped, so min_p is its own threshold.
        cut = [j for j, r in enumerate(rows) if r.params.top_p < 1.0 or r.params.min_p > 0.0]
        if cut:
            idx, sub = _subset(weights, cut)
            threshold = torch.tensor([[rows[j].params.min_p] for j in cut], dtype=sub.dtype, device=device)  # [R, 1]
            nucleus = [i for i, j in enumerate(cut) if rows[j].params.top_p < 1.0]
            if nucleus:
                top_p = torch.tensor([rows[cut[i]].params.top_p for i in nucleus], dtype=sub.dtype, device=device)
                nuc = torch.tensor(nucleus, device=device)
                threshold[nuc] = torch.maximum(threshold[nuc], top_p_threshold(sub[nuc], top_p))
            sub.masked_fill_(sub < threshold, 0.0)
            _store(weights, idx, sub)

        uniform = self._uniforms(rows).to(device)  # [S]
        return _draw(weights, uniform).clamp_(max=vocab - 1)

    def _uniforms(self, rows: list[SamplingRow]) -> torch.Tensor:
        """One U[0, 1) per row: from its own generator, else from the shared one."""
        u = [0.0] * len(rows)
        shared = [j for j, r in enumerate(rows) if r.generator is None]
        for j, r in enumerate(rows):
            if r.generator is not None:
                u[j] = torch.rand(1, generator=r.generator, device=r.generator.device).item()
        if shared:
            for j, value in zip(shared, torch.rand(len(shared), generator=self.generator).tolist()):
                u[j] = value
        return torch.tensor(u, dtype=torch.float32)  # [S]


def _needs_processing(row: SamplingRow) -> bool:
    return bool(row.params.logit_bias) or bool(_min_tokens_blocked(row)) or _has_penalty(row)


def _min_tokens_blocked(row: SamplingRow) -> tuple[int, ...]:
    if len(row.output_token_ids) >= row.params.min_tokens:
        return ()
    return (*row.eos_token_ids, *row.params.stop_token_ids)


def _has_penalty(row: SamplingRow) -> bool:
    p = row.params
    # Presence/frequency look at generated tokens only: nothing to do before the first.
    return p.repetition_penalty != 1.0 or (
        (p.presence_penalty != 0.0 or p.frequency_penalty != 0.0) and len(row.output_token_ids) > 0
    )


def _argmax_rows(raw: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """torch.argmax (first max index) of raw[rows] -> [G]."""
    if len(rows) == raw.shape[0]:
        return raw.argmax(dim=-1)
    idx = torch.tensor(rows, device=raw.device)
    # argmax reads each row once; gathering a minority of rows first is cheaper.
    return raw.argmax(dim=-1)[idx] if 2 * len(rows) >= raw.shape[0] else raw[idx].argmax(dim=-1)


def _subset(t: torch.Tensor, rows: list[int]) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(index, rows of t): the tensor itself when all rows are asked, else a copy."""
    if len(rows) == t.shape[0]:
        return None, t
    idx = torch.tensor(rows, device=t.device)
    return idx, t[idx]


def _store(t: torch.Tensor, idx: torch.Tensor | None, sub: torch.Tensor) -> None:
    if idx is not None:
        t[idx] = sub


def _draw(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: per row, the first id whose cumulative weight exceeds u * total.

    weights [S, Vpad] >= 0 with Vpad a multiple of BLOCK, uniform [S] -> ids [S].
    Zero-weight ids are never returned: the cumulative weight does not rise there.
    """
    n, width = weights.shape
    blocks = weights.view(n, width // BLOCK, BLOCK)  # [S, nb, BLOCK]
    block_mass = blocks.sum(dim=-1)  # [S, nb]
    block_cum = block_mass.cumsum(dim=-1)  # [S, nb]
    target = (uniform.unsqueeze(1) * block_cum[:, -1:]).to(weights.dtype)  # [S, 1]
    b = torch.searchsorted(block_cum, target, right=True)  # [S, 1]
    # Rounding can put target at the very end: take the last block with mass.
    b = torch.minimum(b, _last_positive(block_mass))
    before = torch.where(b > 0, block_cum.gather(1, (b - 1).clamp_(min=0)), 0.0)  # [S, 1]
    block = blocks.gather(1, b.unsqueeze(2).expand(n, 1, BLOCK)).squeeze(1)  # [S, BLOCK]
    j = torch.searchsorted(block.cumsum(dim=-1), target - before, right=True)  # [S, 1]
    j = torch.minimum(j, _last_positive(block))
    return (b * BLOCK + j).squeeze(1)


def _last_positive(t: torch.Tensor) -> torch.Tensor:
    """Index of the last positive entry per row of t [S, N] -> [S, 1] (0 when none)."""
    positive = (t > 0).flip(-1)  # [S, N]
    last = t.shape[1] - 1 - positive.to(torch.uint8).argmax(dim=-1, keepdim=True)  # [S, 1]
    return torch.where(positive.any(dim=-1, keepdim=True), last, 0)


def _results(raw: torch.Tensor, rows: list[SamplingRow], tokens: torch.Tensor) -> list[SampleResult]:
    """Step 1, done last because it needs the chosen ids: logprobs from the raw logits."""
    token_ids = tokens.tolist()
    results = [SampleResult(t, None, []) for t in token_ids]
    wanted = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
    if not wanted:
        return results
    idx = torch.tensor(wanted, device=raw.device)
    logprobs = torch.log_softmax(raw[idx].float(), dim=-1)  # [L, V]
    chosen = logprobs.gather(1, tokens[idx].unsqueeze(1)).squeeze(1).tolist()  # [L]
    k = max(rows[i].params.logprobs for i in wanted)
    if k:
        top_lp, top_ids = torch.topk(logprobs, min(k, logprobs.shape[1]), dim=-1)  # [L, k], most likely first
        top_lp, top_ids = top_lp.tolist(), top_ids.tolist()
    for n, i in enumerate(wanted):
        results[i].logprob = chosen[n]
        asked = rows[i].params.logprobs
        if asked:
            results[i].top = list(zip(top_ids[n][:asked], top_lp[n][:asked]))
    return results
