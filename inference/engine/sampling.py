"""Next-token selection for one sequence: greedy, temperature, top-p."""

from __future__ import annotations

import secrets

import torch


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A private RNG per request, so concurrent or interleaved requests never
    perturb each other's randomness and a given seed always replays."""
    gen = torch.Generator(device=device)
    gen.manual_seed(secrets.randbits(63) if seed is None else seed % (1 << 64))
    return gen


def sample_next_token(
    logits: torch.Tensor,  # [V] float, last-position logits
    *,
    temperature: float,
    top_p: float,
    generator: torch.Generator,
) -> int:
    if temperature <= 0:
        # Same tie-breaking as transformers' greedy search (first max index).
        return int(torch.argmax(logits, dim=-1))
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [V]
    if top_p < 1.0:
        probs = _top_p_filter(probs, top_p)
    return int(torch.multinomial(probs, num_samples=1, generator=generator))


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p."""
    sorted_probs, sorted_idx = torch.sort(probs, descending=True)  # [V], [V]
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # [V]
    # A token is dropped only if the ones above it already reach top_p, so
    # the most likely token always survives.
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    filtered = torch.zeros_like(probs).scatter_(-1, sorted_idx, sorted_probs)  # [V]
    return filtered / filtered.sum()
