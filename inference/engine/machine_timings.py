"""Choices an engine times at start-up, made once per machine and remembered.

On the CPU the engine times a few kernels at start-up to choose how it runs there (wide_steps.py: the dtype of
wide steps, and how many rows the int4 kernels take). Timings near a tie can come out either way from one start to
the next, and the int4 row limit shapes the compiled decode graphs (it is part of their record's key,
background_compile.py): a start that chose differently from the last would compile a second set of graphs (about
6 minutes on 2 cores for the default model). So the first choice made on a machine is kept in a small file beside
torch's compile cache (TORCHINDUCTOR_CACHE_DIR/engine-timings), named by a hash of everything it depends on: the
timed shapes and dtypes, the rule's constants, the CPU, the thread count and torch. Later starts take it from
there; an engine whose cache folder cannot be written to times every start, as before. Deleting the folder (or the
compile cache) times again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def folder() -> Path:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir()) / "engine-timings"


def machine() -> dict:
    """What a timing on this machine depends on besides the timed work."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model, "capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def write_json(path: Path, data: dict) -> None:
    """Write `data` to `path` whole or not at all (a temporary file beside it, renamed): a reader never sees half."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(data, f)
    os.replace(f.name, path)


def remembered(name: str, key: dict, measure: Callable[[], object]) -> object:
    """measure()'s value (JSON: a number, a string or None) for `name` with `key` on this machine: the value stored
    by the first start that measured it, else measured now and stored. One start measures at a time (a file lock):
    another starting meanwhile waits and takes its value."""
    described = json.dumps({"name": name, "key": key, "machine": machine()}, sort_keys=True, default=str)
    try:
        where = folder()
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"{name}-{hashlib.sha256(described.encode()).hexdigest()[:24]}.json"
        lock = open(path.with_suffix(".lock"), "w")
    except OSError as exc:
        log.warning("could not remember the %s timing (%s): timing it at every start", name, exc)
        return measure()
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            pass  # a filesystem without locks: engines starting together may each time it
        try:
            value = json.loads(path.read_text())["value"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not measured yet here, or a damaged file: measure again
        else:
            log.info("%s: %r, as timed by an earlier start on this machine (%s)", name, value, path)
            return value
        value = measure()
        try:
            write_json(path, {"value": value, "described": json.loads(described)})
        except OSError as exc:
            log.warning("could not remember the %s timing (%s): timing it again at the next start", name, exc)
        return value
