"""The C allocator's settings for a process that runs the engine on the CPU.

An eager step allocates its temporaries afresh in every op: a prefill chunk of
1,024 tokens makes tensors of 1-6 MB in each of its layers. glibc's malloc
gives such sizes their own mmap (its threshold starts at 128 kB and moves with
what is freed) and hands freed memory at the top of the heap back to the
kernel past 2x that threshold, so a step keeps mapping fresh pages, and every
first touch of a page is a page fault: F.rms_norm of 1,024 rows of 576 in bf16
took 2.0 ms so against 0.57 ms with the settings below (2 cores), and the
second of two identical passes of prefill-sized norms still faulted 11,392
pages (none with them). vLLM's and Intel's CPU guides preload jemalloc or
tcmalloc for the same reason; `mallopt` gets glibc there without a preload or
another package: sizes up to glibc's largest mmap threshold (32 MB) come from
the heap, and freed memory stays with the process up to TRIM_THRESHOLD (then
it is given back as before). The cost is memory the process keeps after a
large step (at most TRIM_THRESHOLD beyond its peak use, per arena).

Elsewhere than glibc (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 256 << 20
TOP_PAD = 16 << 20

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings above once per process; whether they are in force (False where malloc is not glibc's)."""
    global _applied
    if _applied is None:
        _applied = _mallopt({M_MMAP_THRESHOLD: MMAP_THRESHOLD, M_TRIM_THRESHOLD: TRIM_THRESHOLD,
                             M_TOP_PAD: TOP_PAD})
        if _applied:
            log.info("host memory: allocations up to %d MB come from the heap, which keeps up to %d MB freed "
                     "(no page faults for each step's temporaries)", MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20)
    return _applied


def _mallopt(settings: dict[int, int]) -> bool:
    try:
        libc = ctypes.CDLL(None)
        mallopt, version = libc.mallopt, libc.gnu_get_libc_version  # both only in glibc
    except (OSError, AttributeError):
        return False
    del version
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in settings.items())
