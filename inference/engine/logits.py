"""Logits processing for the batched sampler: steps 2-5 of `Sampler` (logit
bias, min_tokens, token masks, penalties) and top-p for wide nuclei.

Everything here works in place on a float32 workspace `scores` of shape
[W, V], one row per sequence. Row-sparse features (logit bias, min_tokens,
penalties) touch only the (row, token) pairs they concern through flat indices
`row * V + token`, so a batch where one row uses a penalty costs O(that row's
tokens), not another pass over [W, V].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import chain

import torch

logger = logging.getLogger(__name__)

NEG_INF = float("-inf")

# Top-p looks for its cutoff among this many candidates before falling back to
# a larger top-k and finally a full sort: a full [256, 50k] sort costs ~0.7 s
# on CPU, a top-64 a few ms, and the nucleus of a real LLM step is usually far
# smaller than 64 tokens.
TOP_P_CANDIDATES = (64, 1024)


def _ids(tokens: Sequence[int], vocab_size: int, device: torch.device) -> torch.Tensor:
    """The in-vocabulary ids of a token list as a tensor [N']."""
    t = torch.as_tensor(tokens, dtype=torch.long, device=device).reshape(-1)  # [N]
    # Ids >= vocab_size exist only in a padded tokenizer; they have no logit.
    return t[(t >= 0) & (t < vocab_size)]


class PromptIdCache:
    """Unique in-vocabulary prompt ids per prompt, reused across decode steps.

    Converting an 8k-token prompt list to a tensor on every step would cost more
    than the penalty itself. Keyed by content (a tuple hash and equality check,
    a few microseconds per thousand ids), so it works however the caller builds
    the list each step, and n > 1 choices of one prompt share an entry.
    Entries a call does not use are dropped at the end of it.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[tuple[int, ...], int, torch.Tensor]] = {}
        self._used: dict[int, tuple[tuple[int, ...], int, torch.Tensor]] = {}

    def get(self, prompt: Sequence[int], vocab_size: int, device: torch.device) -> torch.Tensor:
        snapshot = tuple(prompt)
        key = hash(snapshot)
        entry = self._used.get(key) or self._entries.get(key)
        if entry is None or entry[0] != snapshot or entry[1] != vocab_size or entry[2].device != device:
            entry = (snapshot, vocab_size, torch.unique(_ids(snapshot, vocab_size, device)))  # [P']
        self._used[key] = entry
        return entry[2]

    def end_call(self) -> None:
        self._entries, self._used = self._used, {}


def apply_logit_bias(scores: torch.Tensor, biases: list[tuple[int, dict[int, float]]], vocab_size: int) -> None:
    """scores[row, id] += bias for each (local row, {id: bias}); out-of-range ids are ignored."""
    stride = scores.shape[1]
    flat_idx: list[int] = []
    values: list[float] = []
    for row, bias in biases:
        for token, value in bias.items():
            if 0 <= token < vocab_size:
                flat_idx.append(row * stride + token)
                values.append(value)
    if flat_idx:
        idx = torch.tensor(flat_idx, dtype=torch.long, device=scores.device)  # [N], unique per row (dict keys)
        vals = torch.tensor(values, dtype=scores.dtype, device=scores.device)  # [N]
        scores.view(-1).index_add_(0, idx, vals)


def block_tokens(scores: torch.Tensor, blocked: list[tuple[int, Sequence[int]]], vocab_size: int) -> None:
    """scores[row, id] = -inf for each (local row, ids): min_tokens hides EOS and stop ids."""
    stride = scores.shape[1]
    flat_idx = [row * stride + t for row, ids in blocked for t in ids if 0 <= t < vocab_size]
    if flat_idx:
        idx = torch.tensor(flat_idx, dtype=torch.long, device=scores.device)  # [N]
        scores.view(-1)[idx] = NEG_INF


def _allowed_row(allowed, width: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    a = torch.as_tensor(allowed, device=device).reshape(-1).to(torch.bool)  # [V_mask]
    row = torch.zeros(width, dtype=torch.bool, device=device)  # [V]
    # A mask built for a smaller tokenizer vocabulary leaves the model's extra
    # (padding) ids disallowed; one built wider is cut to the model's ids.
    n = min(a.shape[0], vocab_size)
    row[:n] = a[:n]
    return row


def apply_token_masks(scores: torch.Tensor, masks: list[tuple[int, object]], vocab_size: int) -> None:
    """Disallowed ids get -inf. A row whose mask leaves no finite logit (nothing
    allowed, or only ids min_tokens just blocked) keeps its unmasked logits:
    a constraint violation is recoverable, a NaN distribution is not."""
    rows = torch.tensor([row for row, _ in masks], dtype=torch.long, device=scores.device)  # [M]
    allowed = torch.stack([_allowed_row(a, scores.shape[1], vocab_size, scores.device) for _, a in masks])  # [M, V]
    masked = torch.where(allowed, scores[rows], NEG_INF)  # [M, V]
    ok = masked.amax(dim=-1) > NEG_INF  # [M]
    if bool(ok.all()):
        scores[rows] = masked
        return
    logger.warning("token mask allows no token for %d sequence(s); sampling them unmasked", int((~ok).sum()))
    scores[rows[ok]] = masked[ok]


def apply_penalties(
    scores: torch.Tensor,
    rows: list[int],
    prompt_ids: list[torch.Tensor | None],  # unique prompt ids per row; None where repetition_penalty == 1
    output_ids: list[Sequence[int]],
    repetition: list[float],
    presence: list[float],
    frequency: list[float],
    vocab_size: int,
) -> None:
    """Repetition penalty (HF/CTRL, prompt + output) then presence/frequency (OpenAI, output only)."""
    device = scores.device
    stride = scores.shape[1]
    flat = scores.view(-1)  # [W * V]

    def per_row(values: list[float]) -> torch.Tensor:
        # Coefficient by workspace row, so a flat index finds its row's value at idx // stride.
        t = torch.zeros(scores.shape[0], dtype=scores.dtype, device=device)  # [W]
        t[rows] = torch.tensor(values, dtype=scores.dtype, device=device)
        return t

    # Every row's generated ids in one tensor, as flat indices into scores.
    local = torch.tensor(rows, dtype=torch.long, device=device)  # [R]
    lengths = torch.tensor([len(ids) for ids in output_ids], device=device)  # [R]
    out = torch.as_tensor(list(chain.from_iterable(output_ids)), dtype=torch.long, device=device)  # [N]
    out_row = torch.repeat_interleave(local, lengths)  # [N]
    valid = (out >= 0) & (out < vocab_size)
    out_flat = (out_row * stride + out)[valid]  # [N']
    out_row = out_row[valid]  # [N']

    rep_rows = [(row, ids) for row, ids, p in zip(rows, prompt_ids, repetition) if p != 1.0]
    if rep_rows:
        rep = per_row(repetition)  # [W], 0 for rows without the penalty
        prompt = torch.cat([ids + row * stride for row, ids in rep_rows])  # [P]
        idx = torch.cat([prompt, out_flat[rep[out_row] != 0]])  # [N] may repeat an id: every copy writes the same value
        p = rep[idx // stride]  # [N]
        logit = flat[idx]  # [N]
        flat[idx] = torch.where(logit > 0, logit / p, logit * p)

    if any(presence) or any(frequency):
        pres, freq = per_row(presence), per_row(frequency)  # [W]
        idx = out_flat[(pres[out_row] != 0) | (freq[out_row] != 0)]  # [N]
        uniq, counts = torch.unique(idx, return_counts=True)  # [U], [U]
        row_of = uniq // stride  # [U]
        flat[uniq] -= pres[row_of] + freq[row_of] * counts.to(scores.dtype)


def top_p_threshold(
    weights: torch.Tensor, top_p: torch.Tensor, candidates: Sequence[int] = TOP_P_CANDIDATES
) -> torch.Tensor:
    """Per row, the smallest weight kept by nucleus filtering -> [R, 1].

    weights [R, V] are unnormalised probabilities (already top-k filtered).
    The cutoff is looked for among the `candidates` most likely ids, then
    among all of them (a full sort).
    The kept set is the most likely tokens up to and including the first one
    at which the mass reaches top_p; the most likely token always survives.
    Tokens tied with the last kept one are kept too (a sort would keep an
    arbitrary subset of the tie).
    """
    n, vocab = weights.shape
    need = top_p * weights.sum(dim=-1)  # [R] mass to reach, unnormalised
    thresholds = torch.empty(n, 1, dtype=weights.dtype, device=weights.device)  # [R, 1]
    pending = torch.arange(n, device=weights.device)  # [P] rows whose cutoff is not found yet
    for k in (*[c for c in candidates if c < vocab], vocab):
        w = weights if pending.numel() == n else weights[pending]  # [P, V]
        if k < vocab:
            top = torch.topk(w, k, dim=-1, sorted=True).values  # [P, k]
        else:
            top = torch.sort(w, dim=-1, descending=True).values  # [P, V]
        cum = top.cumsum(dim=-1)  # [P, k]
        keep = (cum - top) < need[pending].unsqueeze(1)  # [P, k], a prefix: mass before < top_p
        # >= 1 for any real distribution; clamped so that a row of NaN weights cannot fail the whole step.
        n_keep = keep.sum(dim=-1, keepdim=True).clamp_(min=1)  # [P, 1]
        # Found when some candidate is dropped; with all V candidates it is final.
        found = (n_keep < k).flatten() if k < vocab else torch.ones_like(pending, dtype=torch.bool)  # [P]
        thresholds[pending[found]] = top.gather(1, n_keep - 1)[found]
        pending = pending[~found]
        if pending.numel() == 0:
            break
    return thresholds
