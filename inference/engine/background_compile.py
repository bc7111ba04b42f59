"""The compiled CPU decode step (compiled_decode.py) compiled in a child process while the engine serves eager.

Compiling the default model's decode graphs takes about 3 minutes on 2 cores the first time on a machine, seconds
once torch's compile cache (TORCHINDUCTOR_CACHE_DIR) holds them. An engine started with compile_in_background that
finds no record of an earlier compile of its graphs serves at once with eager decode steps, and starts a child
process at a lower CPU priority that builds the same model runner, compiles the graphs into the cache, and exits.
Then the engine compiles them itself between steps, from the cache (seconds), and decode steps switch to them. Every
compile that succeeds leaves a record (a file named by a hash of what the graphs depend on), so the next engine
compiles at start-up, from the cache. One child at a time compiles a set of graphs on a machine (a file lock): a
second waits, then finds them cached. A child ends with its engine: stopped when the engine shuts down, killed by
the kernel when the engine's thread or process ends.

python -m inference.engine.background_compile SPEC is the child (SPEC: the JSON of child_spec()).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

NICENESS = 10  # the child's CPU priority below the serving process's
CHILD_KV_CACHE_BYTES = 16 << 20
PR_SET_PDEATHSIG = 1
ROOT = Path(__file__).resolve().parents[2]  # the directory holding the `inference` package


def records_dir() -> Path:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir()) / "engine-decode-graphs"


def graph_key(spec: dict) -> str:
    """What the compiled graphs depend on: the model's configuration, the runner's shapes, torch, the CPU."""
    digest = hashlib.sha256(Path(spec["model_path"], "config.json").read_bytes())
    shapes = {name: spec[name] for name in ("dtype", "quantization", "attention_backend", "max_positions", "config")}
    digest.update(json.dumps(shapes, sort_keys=True).encode())
    digest.update(f"{torch.__version__} {torch.backends.cpu.get_cpu_capability()}".encode())
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
        path = folder / f"{graph_key(spec)}.json"
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as f:
            json.dump({"model_path": spec["model_path"], "seconds": round(seconds, 1), "torch": torch.__version__}, f)
        os.replace(f.name, path)
    except OSError as exc:
        log.warning("could not record the compiled decode step in %s: %s", records_dir(), exc)


def child_command(spec: dict) -> list[str]:
    return [sys.executable, "-m", "inference.engine.background_compile", json.dumps({**spec, "parent": os.getpid()})]


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
    from .config import EngineConfig
    from .model_runner import ModelRunner

    folder = records_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{graph_key(spec)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another engine's child compiling the same graphs: they will be cached
        # The graphs alone, on a small KV cache: they take any cache size (compiled_decode.py).
        runner = ModelRunner(spec["model_path"], EngineConfig(kv_cache_bytes=CHILD_KV_CACHE_BYTES, **spec["config"]),
                             device="cpu", dtype=spec["dtype"], quantization=spec["quantization"],
                             attention_backend=spec["attention_backend"], max_positions=spec["max_positions"],
                             compile_only=True)
    return 0 if runner.compiled is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
