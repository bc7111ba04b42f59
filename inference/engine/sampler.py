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
    TOP_P_CANDIDATES,
    PromptIdCache,
    apply_logit_bias,
    apply_penalties,
    apply_token_masks,
    block_tokens,
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
        guarded: list[int] = []  # greedy under min_tokens alone: the raw argmax unless it is a blocked token
        on_host = raw.device.type == "cpu"  # reading a row's argmax back is free here, a sync on a GPU
        for i, row in enumerate(rows):
            if row.params.temperature != 0:
                sampled.append(i)
            elif i in masks or _needs_processing(row):
                (guarded if on_host and i not in masks and _min_tokens_only(row) else work_greedy).append(i)
            else:
                greedy.append(i)

        tokens = torch.empty(len(rows), dtype=torch.long, device=raw.device)  # [B]
        if guarded:
            # Blocking tokens (-inf) changes the first maximum only when it is one of them: then the row is processed.
            kept, kept_tokens = [], []
            for i, token in zip(guarded, _argmax_rows(raw, guarded).tolist()):
                if token in _min_tokens_blocked(rows[i]):
                    work_greedy.append(i)
                else:
                    kept.append(i)
                    kept_tokens.append(token)
            if kept:
                tokens[kept] = torch.tensor(kept_tokens)
        if greedy:
            tokens[greedy] = _argmax_rows(raw, greedy)
        work = sampled + work_greedy  # workspace rows: sampled first, so they are a contiguous slice
        if work:
            scores = self._load(raw, work)  # [W, V] float32, owned
            if self._process(scores, [rows[i] for i in work], [masks.get(i) for i in work], vocab):
                self._revive(scores, raw, work, masks, vocab)
            n_sampled = len(sampled)
            if work_greedy:
                tokens[work_greedy] = scores[n_sampled:].argmax(dim=-1)
            if sampled:
                tokens[sampled] = self._sample(scores[:n_sampled], [rows[i] for i in sampled], vocab)
        self._prompt_ids.end_call()
        return _results(raw, rows, tokens)

    def _revive(self, scores: torch.Tensor, raw: torch.Tensor, work: list[int], masks: dict, vocab: int) -> None:
        """Rows whose constraints left no token at all (a grammar that only allows EOS while
        min_tokens forbids it) keep the grammar's choice: their raw logits under the token mask
        alone, or the raw logits if even that allows nothing. A row with no finite score would
        otherwise sample from NaN weights and fail the whole step."""
        dead = (~torch.isfinite(scores.amax(dim=-1))).nonzero().flatten().tolist()
        for j in dead:
            scores[j] = raw[work[j]].float()
            if masks.get(work[j]) is not None:
                apply_token_masks(scores[j:j + 1], [(0, masks[work[j]])], vocab)
                if not torch.isfinite(scores[j].amax()):
                    scores[j] = raw[work[j]].float()

    def _load(self, raw: torch.Tensor, work: list[int]) -> torch.Tensor:
        """Rows `work` of raw [B, V] as float32 in the reused workspace -> [W, V]."""
        n, vocab = len(work), raw.shape[1]
        ws = self._workspace
        if ws is None or ws.numel() < n * vocab or ws.device != raw.device:
            ws = self._workspace = torch.empty(n * vocab, dtype=torch.float32, device=raw.device)
        scores = ws[: n * vocab].view(n, vocab)  # [W, V]
        if work == list(range(raw.shape[0])):
            scores.copy_(raw)
        else:
            idx = torch.tensor(work, device=raw.device)
            if raw.dtype == torch.float32:
                torch.index_select(raw, 0, idx, out=scores)
            else:
                scores.copy_(raw.index_select(0, idx))
        return scores

    def _process(self, scores: torch.Tensor, rows: list[SamplingRow], masks: list, vocab: int) -> bool:
        """Steps 2-5 in place on scores [W, V]: logit_bias, min_tokens, token mask, penalties. True when some
        token was ruled out (-inf), which may have left a row nothing: biases and penalties stay finite."""
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
        return bool(blocked or with_mask)

    def _sample(self, scores: torch.Tensor, rows: list[SamplingRow], vocab: int) -> torch.Tensor:
        """Temperature, top-k, top-p, min-p and one draw per row; scores [S, V] is consumed -> ids [S]."""
        device = scores.device
        temps = [max(r.params.temperature, MIN_TEMPERATURE) for r in rows]
        if any(t != 1.0 for t in temps):
            scores.div_(torch.tensor(temps, dtype=scores.dtype, device=device).unsqueeze(1))
        # Unnormalised probabilities with the row max at exactly 1: filters and
        # draws need no division by the sum, and min_p is a plain threshold.
        weights = scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()  # [S, V]
        uniform = self._uniforms(rows).to(device)  # [S]
        tokens = torch.empty(len(rows), dtype=torch.long, device=device)  # [S]

        # Rows with top-k or top-p draw among their few most likely ids: no
        # pass over the vocabulary to zero the rest.
        top_k = [r.params.top_k if 0 < r.params.top_k < vocab else 0 for r in rows]  # 0: off
        narrow = [j for j, r in enumerate(rows) if top_k[j] or r.params.top_p < 1.0]
        wide = [j for j, r in enumerate(rows) if not (top_k[j] or r.params.top_p < 1.0)]
        if narrow:
            ids, done = _draw_top(
                _rows(weights, narrow),
                torch.tensor([top_k[j] for j in narrow], device=device),
                torch.tensor([rows[j].params.top_p for j in narrow], dtype=weights.dtype, device=device),
                torch.tensor([rows[j].params.min_p for j in narrow], dtype=weights.dtype, device=device),
                uniform[narrow],
            )
            tokens[narrow] = ids
            # A nucleus wider than the candidates: those rows go the wide way.
            wide += [j for j, ok in zip(narrow, done.tolist()) if not ok]
        if wide:
            self._filter_wide(weights, rows, sorted(wide))
            tokens[wide] = _draw(weights, uniform)[wide]  # cheap for all rows: block sums only
        return tokens

    def _filter_wide(self, weights: torch.Tensor, rows: list[SamplingRow], wide: list[int]) -> None:
        """Zero the weights that top-p (nuclei too wide for the candidate path) and min-p drop."""
        device = weights.device
        top_p = [j for j in wide if rows[j].params.top_p < 1.0]
        min_p = [j for j in wide if rows[j].params.min_p > 0.0]
        if not (top_p or min_p):
            return
        threshold = torch.zeros(weights.shape[0], 1, dtype=weights.dtype, device=device)  # [S, 1]
        if min_p:
            # The max weight is 1 whatever top-p dropped: min_p is its own threshold.
            threshold[min_p] = torch.tensor([[rows[j].params.min_p] for j in min_p], dtype=weights.dtype, device=device)
        if top_p:
            p = torch.tensor([rows[j].params.top_p for j in top_p], dtype=weights.dtype, device=device)  # [R]
            nucleus = top_p_threshold(_rows(weights, top_p), p, candidates=TOP_P_CANDIDATES[1:])  # [R, 1]
            threshold[top_p] = torch.maximum(threshold[top_p], nucleus)
        filtered = sorted({*top_p, *min_p})
        if 3 * len(filtered) < 2 * weights.shape[0]:  # copying a few rows out and back beats a full pass
            idx = torch.tensor(filtered, device=device)
            sub = weights[idx]  # [R, V]
            weights[idx] = sub.masked_fill_(sub < threshold[idx], 0.0)
        else:
            weights.masked_fill_(weights < threshold, 0.0)

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


def _min_tokens_only(row: SamplingRow) -> bool:
    return not row.params.logit_bias and not _has_penalty(row)


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


def _rows(t: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """t[rows]: t itself when every row is asked (callers only read it), else a copy."""
    return t if len(rows) == t.shape[0] else t[torch.tensor(rows, device=t.device)]


def _draw_top(
    weights: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor, uniform: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw among each row's most likely ids after top-k, top-p and min-p.

    weights [R, V] with row max 1; top_k [R] (0 = off), top_p, min_p, uniform [R].
    -> (ids [R], done [R]): done is False where top-p's nucleus (without top-k)
    is wider than the candidates looked at; those ids are meaningless.
    """
    n, vocab = weights.shape
    has_k = top_k > 0  # [R]
    k = int(top_k.max()) if bool(has_k.all()) else max(int(top_k.max()), TOP_P_CANDIDATES[0])
    k = min(k, vocab)
    vals, ids = torch.topk(weights, k, dim=-1)  # [R, k], most likely first
    rank = torch.arange(k, device=weights.device)  # [k]
    # top-k keeps exactly k ids (ties broken by topk's order, as a sort would).
    vals = vals * (rank < torch.where(has_k, top_k, k).unsqueeze(1))  # [R, k]
    # top-p's mass is measured on the top-k filtered distribution.
    total = torch.where(has_k, vals.sum(dim=-1), weights.sum(dim=-1)).unsqueeze(1)  # [R, 1]
    mass_before = vals.cumsum(dim=-1) - vals  # [R, k]
    need = top_p.unsqueeze(1) * total  # [R, 1]
    # The most likely id always survives: nothing before it, and weight 1 >= min_p.
    keep = (mass_before < need) & (vals >= min_p.unsqueeze(1))  # [R, k]
    done = has_k | (mass_before[:, -1] >= need[:, 0]) | (k == vocab)  # [R]
    cum = (vals * keep).cumsum(dim=-1)  # [R, k]
    kept = cum[:, -1:]  # [R, 1]
    target = torch.minimum(uniform.unsqueeze(1) * kept, torch.nextafter(kept, torch.zeros_like(kept)))  # [R, 1]
    j = torch.searchsorted(cum, target, right=True).clamp_(max=k - 1)  # [R, 1]
    return ids.gather(1, j).squeeze(1), done


def _draw(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: per row, the first id whose cumulative weight exceeds u * total.

    weights [S, V] >= 0, uniform [S] in [0, 1) -> ids [S]. Cumulative sums are
    taken over blocks of BLOCK ids and then inside the chosen block only.
    Zero-weight ids are never returned: the cumulative weight does not rise there.
    """
    n, vocab = weights.shape
    full = vocab // BLOCK
    mass = weights[:, : full * BLOCK].unflatten(1, (full, BLOCK)).sum(dim=-1)  # [S, nb]
    if vocab % BLOCK:
        mass = torch.cat([mass, weights[:, full * BLOCK :].sum(dim=-1, keepdim=True)], dim=1)  # [S, nb]
    cum = mass.cumsum(dim=-1)  # [S, nb]
    total = cum[:, -1:]  # [S, 1]
    # Kept strictly below the total, so the search lands on a block with mass
    # even when u * total rounds up.
    target = torch.minimum(uniform.unsqueeze(1) * total, torch.nextafter(total, torch.zeros_like(total)))  # [S, 1]
    b = torch.searchsorted(cum, target, right=True).clamp_(max=cum.shape[1] - 1)  # [S, 1]; clamp: NaN rows only
    before = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)), 0.0)  # [S, 1] mass of the blocks before b
    ids = b * BLOCK + torch.arange(BLOCK, device=weights.device)  # [S, BLOCK]
    block = torch.where(ids < vocab, weights.gather(1, ids.clamp(max=vocab - 1)), 0.0)  # [S, BLOCK]
    inner = block.cumsum(dim=-1)  # [S, BLOCK]
    rest = torch.minimum(target - before, torch.nextafter(inner[:, -1:], torch.zeros_like(total)))  # [S, 1]
    j = torch.searchsorted(inner, rest, right=True).clamp_(max=BLOCK - 1)  # [S, 1]
    return (b * BLOCK + j).squeeze(1).clamp_(max=vocab - 1)


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
