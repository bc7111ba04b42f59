"""Sizing knobs of the continuous-batching engine.

Plain dataclass with no torch import: the scheduler and its tests build one
without touching the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDE_STEPS = ("auto", "float32", "off")


@dataclass
class EngineConfig:
    block_size: int = 16
    num_blocks: int = 0  # 0 => the runner sizes it from kv_cache_bytes and fills it in before the Scheduler is built
    # None: on a GPU, what the weights and a profiling step leave of gpu_memory_utilization; on the CPU, 1 GiB.
    kv_cache_bytes: int | None = None
    max_num_seqs: int = 64  # running sequences at most
    max_num_batched_tokens: int = 1024  # token budget of one step (decode tokens + prefill chunk tokens)
    # Context window: prompt + output never exceeds it. None: the model's own (max_position_embeddings); lowered to
    # the model's sliding window, and to what the KV cache holds, when those are shorter.
    max_model_len: int | None = None
    enable_prefix_caching: bool = True  # reuse the KV of full blocks whose token prefix was computed before
    # Seconds a grammar may take to compile, in a child process stopped at the deadline; None: in the
    # caller's thread, unbounded.
    grammar_compile_timeout_s: float | None = None
    # CPU, reduced precision, quantized weights: steps past the int4 kernels' rows (prefills, large batches) in
    # float32 ("float32"), in the model's dtype ("off"), or whichever a start-up timing finds faster ("auto";
    # wide_steps.py).
    wide_steps: str = "auto"

    def __post_init__(self) -> None:
        # Fail at construction rather than as a hang or a ZeroDivisionError
        # deep inside a step.
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("max_model_len must be >= 1 (or None: the model's context window)")
        if self.num_blocks < 0:
            raise ValueError("num_blocks must be >= 0 (0 => sized by the runner)")
        if self.kv_cache_bytes is not None and self.kv_cache_bytes < 0:
            raise ValueError("kv_cache_bytes must be >= 0")
        if self.wide_steps not in WIDE_STEPS:
            raise ValueError(f"wide_steps must be one of {', '.join(WIDE_STEPS)}")
        if self.grammar_compile_timeout_s is not None and not self.grammar_compile_timeout_s > 0:
            raise ValueError("grammar_compile_timeout_s must be > 0 (or None)")
