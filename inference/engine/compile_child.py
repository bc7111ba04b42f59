"""The child process of a background compile (background_compile.py): builds a model runner like its engine's with
only the compiled decode graphs, which fills torch's compile cache, and exits 0 when they compiled.

    python -m inference.engine.compile_child SPEC     (SPEC: ModelRunner._compile_spec() as JSON, plus "parent")
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import signal
import sys

import torch

from .background_compile import graph_key, records_dir
from .config import EngineConfig
from .model_runner import ModelRunner

NICENESS = 10  # below the serving process's CPU priority
KV_CACHE_BYTES = 16 << 20  # the graphs take any cache size (compiled_decode.py)
PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """Be killed when the thread that started this process ends (the engine's, on Linux): no compile outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it ended before this process could ask
        sys.exit(2)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    _die_with(spec["parent"])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.nice(NICENESS)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])  # the engine's: the cache entries it will look up are keyed by it

    folder = records_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{graph_key(spec)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another engine's child compiling the same graphs: they will be cached
        runner = ModelRunner(spec["model_path"], EngineConfig(kv_cache_bytes=KV_CACHE_BYTES, **spec["config"]),
                             device="cpu", dtype=spec["dtype"], quantization=spec["quantization"],
                             attention_backend=spec["attention_backend"], max_positions=spec["max_positions"],
                             int4_rows=spec.get("int4_rows"), compile_only=True)
    return 0 if runner.compiled is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
