"""How much GPU memory the KV cache gets: what is left after the weights and one step at the largest batch.

As vLLM does: the process may use `gpu_memory_utilization` of the device's
memory; the weights, the peak activations of a profiling step (a prefill of
`max_num_batched_tokens` tokens, logits for `max_num_seqs` rows) and memory
that other processes or libraries hold come off that, and the rest is cache.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# Left for CUDA graphs' own allocations and the allocator's fragmentation.
HEADROOM_BYTES = 256 << 20


def size_kv_cache(runner, utilization: float) -> int:
    """Bytes for the KV cache on runner's CUDA device, measured with its small profiling cache in place."""
    if not 0 < utilization <= 1:
        raise ValueError("gpu_memory_utilization must be in (0, 1]")
    device = runner.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    runner.profile_step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    profiling_cache = runner.cache._storage.numel() * runner.cache._storage.element_size()
    free, total = torch.cuda.mem_get_info(device)
    others = max(0, (total - free) - torch.cuda.memory_reserved(device))  # other processes, CUDA context
    budget = int(total * utilization) - (peak - profiling_cache) - others - HEADROOM_BYTES
    log.info("GPU memory: %.1f GiB total, %.0f%% usable, weights and peak activations %.2f GiB, "
             "held elsewhere %.2f GiB: %.2f GiB for the KV cache", total / 2**30, utilization * 100,
             (peak - profiling_cache) / 2**30, others / 2**30, max(budget, 0) / 2**30)
    if budget <= 0:
        raise RuntimeError(f"no GPU memory left for the KV cache at gpu_memory_utilization={utilization}: "
                           "raise it, or lower max_num_batched_tokens / max_num_seqs")
    return budget
