"""The compiled CPU decode step (compiled_decode.py) compiled in a child process while the engine serves eager.

Compiling the default model's decode graphs takes about 6 minutes on 2 cores the first time on a machine, seconds
once torch's compile cache (TORCHINDUCTOR_CACHE_DIR) holds them. An engine started with compile_in_background that
finds no record of an earlier compile of its graphs serves at once with eager decode steps, and starts a child
process at a lower CPU priority that builds the same model runner, compiles the graphs into the cache, and exits.
Then the engine compiles them itself between steps, from the cache (seconds), and decode steps switch to them. Every
compile that succeeds leaves a record (a file named by a hash of what the graphs depend on), so the next engine
compiles at start-up, from the cache. One child at a time compiles a set of graphs on a machine (a file lock): a
second waits, then finds them cached. Meanwhile the engine's eager steps run on one thread fewer, the core left to
the compile (model_runner.py). A child ends with its engine: stopped when the engine shuts down, killed by the
kernel when the engine's thread or process ends. The child is compile_child.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .compiled_decode import GRAPH_ROWS
from .machine_timings import write_json

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the directory holding the `inference` package


def records_dir() -> Path:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir()) / "engine-decode-graphs"


def graph_key(spec: dict) -> str:
    """What the compiled graphs depend on: the model's configuration, the runner's shapes, torch, the CPU and the
    thread count (torch's compile cache specialises CPU kernels on it: graphs compiled on another count are compiled
    again, minutes, so a record made with another count must not send an engine to compile them at start-up)."""
    digest = hashlib.sha256(Path(spec["model_path"], "config.json").read_bytes())
    shapes = {name: spec.get(name) for name in ("dtype", "quantization", "attention_backend", "max_positions",
                                                 "int4_rows", "config", "threads")}
    digest.update(json.dumps(shapes, sort_keys=True).encode())
    digest.update(f"{torch.__version__} {torch.backends.cpu.get_cpu_capability()}".encode())
    digest.update(repr(GRAPH_ROWS).encode())  # which graphs (an engine of a release with fewer finds it not recorded)
    if spec.get("kv_dtype"):  # a cache and an output layer's dense copy in another dtype than the model's
        digest.update(f"kv {spec['kv_dtype']}".encode())  # (precision.dense_copy_dtype)
    return digest.hexdigest()[:32]


def recorded(spec: dict) -> bool:
    try:
        return (records_dir() / f"{graph_key(spec)}.json").is_file()
    except OSError:
        return False


def record(spec: dict, seconds: float) -> None:
    """Note that the compile cache holds the graphs of `spec` (best effort: without it the next engine compiles in
    the background again, and finds them cached)."""
    try:
        folder = records_dir()
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / f"{graph_key(spec)}.json",
                   {"model_path": spec["model_path"], "seconds": round(seconds, 1), "torch": torch.__version__})
    except OSError as exc:
        log.warning("could not record the compiled decode step in %s: %s", records_dir(), exc)


def child_command(spec: dict) -> list[str]:
    """The child's command line: compile_child.py with the runner's spec (ModelRunner._compile_spec) and this pid."""
    return [sys.executable, "-m", "inference.engine.compile_child", json.dumps({**spec, "parent": os.getpid()})]


class BackgroundCompile:
    """The child process compiling one runner's decode graphs (`compiled`: the runner's CompiledDecode, used once
    it exits)."""

    def __init__(self, spec: dict, compiled):
        self.spec = spec
        self.compiled = compiled
        self.started = time.monotonic()
        self._output = tempfile.TemporaryFile()  # its log, shown if it fails
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(child_command(spec), stdin=subprocess.DEVNULL, stdout=self._output,
                                        stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def poll(self) -> int | None:
        """None while it runs, else its exit status."""
        return self.process.poll()

    def output(self, limit: int = 4000) -> str:
        self._output.seek(0)
        return self._output.read().decode(errors="replace")[-limit:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._output.close()
