"""A CPU engine's process reuses the memory its steps free instead of faulting in fresh pages on every step.

Each case runs in a fresh interpreter (the allocator's settings are process-wide): prefill-sized
RMS norms on the engine's own kind of thread, twice; the page faults of the second pass are counted.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, resource, sys, threading
import torch
import torch.nn.functional as F

mode, model = sys.argv[1], sys.argv[2]
applied = None
if mode == "engine":
    from inference.engine.engine import Engine
    from inference.engine import host_memory
    Engine(model, dtype="float32")
    applied = host_memory._applied
weight = torch.randn(576).to(torch.bfloat16)
faults = []

def norms():
    for rows in (512, 1024, 300, 2048, 1000) * 4:  # a few prefill chunks' worth of layers
        F.rms_norm(torch.randn(rows, 576).to(torch.bfloat16), weight.shape, weight, 1e-5)

def run():
    norms()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    norms()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

thread = threading.Thread(target=run)
thread.start()
thread.join()
print(json.dumps({"faults": faults[0], "applied": applied}))
"""


def second_pass(mode: str, model: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode, model], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_cpu_engine_reuses_freed_memory_for_each_steps_temporaries(tiny_model_path):
    plain = second_pass("plain", tiny_model_path)
    with_engine = second_pass("engine", tiny_model_path)
    assert with_engine["applied"] is True
    # Without the settings every pass maps its temporaries afresh: thousands of faults (11,392 when measured).
    assert plain["faults"] > 1000, plain
    assert with_engine["faults"] < plain["faults"] / 20, (with_engine, plain)
