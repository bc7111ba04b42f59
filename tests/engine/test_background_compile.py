"""With compile_in_background, an engine whose compiled CPU decode step torch's cache lacks serves at once with eager
decode steps while a child process compiles it, then switches to it; the next engine finds it cached and compiles at
start-up (background_compile.py)."""
import logging
import sys

import pytest

from inference.engine import background_compile
from tests.poll import wait_until

from .helpers import TIMEOUT
from .test_compiled_decode import engine_for
from .test_families import greedy_run

COMPILE_TIMEOUT = 900  # a cold compile of the tiny model's graphs on a busy 2-core machine


@pytest.fixture
def no_records(tmp_path, monkeypatch):
    """No engine has recorded its compiled graphs yet (torch's own cache may hold them: the child is then quick)."""
    monkeypatch.setattr(background_compile, "records_dir", lambda: tmp_path / "records")
    return tmp_path / "records"


def prompt(engine, words=3):
    return engine.tokenizer.encode_chat([{"role": "user", "content": "wave " * words}])


def test_an_engine_serves_eager_while_a_child_compiles_its_decode_step_then_switches_to_it(tiny_model_path,
                                                                                            no_records, caplog):
    caplog.set_level(logging.INFO, logger="inference.engine")
    engine = engine_for(tiny_model_path, dtype="bfloat16", compile_in_background=True)
    try:
        runner = engine.runner
        child = runner.pending_compile
        assert runner.compiled is None and child is not None and engine.stats()["compiling"] == 1
        assert child.process.poll() is None  # compiling while the engine serves
        assert [len(tokens) for tokens in greedy_run(engine, [prompt(engine)] * 2)] == [12, 12]  # eager
        wait_until(lambda: engine.stats()["compiling"] == 0, timeout=COMPILE_TIMEOUT, interval=0.5,
                   message="the background compile to end")
        assert child.process.returncode == 0
        compiled = runner.compiled
        assert compiled is not None, caplog.text
        before = compiled.calls
        assert len(greedy_run(engine, [prompt(engine)])[0]) == 12
        assert compiled.calls - before == 11  # the prefill samples the first token; each other one is a graph call
        assert "compiled decode step ready after" in caplog.text
        assert len(list(no_records.glob("*.json"))) == 1
    finally:
        engine.shutdown(timeout=TIMEOUT)

    again = engine_for(tiny_model_path, dtype="bfloat16", compile_in_background=True)
    try:  # recorded: compiled at start-up, from the cache
        assert again.runner.pending_compile is None and again.runner.compiled is not None
        assert again.stats()["compiling"] == 0
    finally:
        again.shutdown(timeout=TIMEOUT)


def test_a_background_compile_that_fails_leaves_decode_steps_eager_and_says_why(tiny_model_path, no_records,
                                                                                monkeypatch, caplog):
    monkeypatch.setattr(background_compile, "child_command", lambda spec: [
        sys.executable, "-c", "import sys; print('no C++ compiler here'); sys.exit(3)"])
    engine = engine_for(tiny_model_path, dtype="bfloat16", compile_in_background=True)
    try:
        wait_until(lambda: engine.stats()["compiling"] == 0, timeout=60, interval=0.2,
                   message="the failed compile to be noticed by an idle engine")
        assert engine.runner.compiled is None
        assert "failed (exit status 3)" in caplog.text and "no C++ compiler here" in caplog.text
        assert len(greedy_run(engine, [prompt(engine)])[0]) == 12
        assert not list(no_records.glob("*.json"))  # nothing recorded: the next engine tries again
    finally:
        engine.shutdown(timeout=TIMEOUT)


def test_shutting_the_engine_down_stops_its_background_compile(tiny_model_path, no_records, monkeypatch):
    monkeypatch.setattr(background_compile, "child_command", lambda spec: [
        sys.executable, "-c", "import time; time.sleep(600)"])
    engine = engine_for(tiny_model_path, dtype="bfloat16", compile_in_background=True)
    child = engine.runner.pending_compile.process
    engine.shutdown(timeout=TIMEOUT)
    assert child.poll() is not None


@pytest.mark.parametrize("options", [{"dtype": "float32"}, {"dtype": "bfloat16", "enforce_eager": True}])
def test_engines_that_do_not_compile_their_decode_step_start_no_child(tiny_model_path, no_records, options):
    engine = engine_for(tiny_model_path, compile_in_background=True, **options)
    try:
        assert engine.runner.pending_compile is None and engine.runner.compiled is None
    finally:
        engine.shutdown(timeout=TIMEOUT)


def test_a_child_whose_engine_is_gone_before_it_starts_exits_at_once():
    import json
    import subprocess

    done = subprocess.run(background_compile.child_command({"model_path": "unused"})[:-1] + [
        json.dumps({"model_path": "unused", "parent": 1})], cwd=background_compile.ROOT, timeout=120)
    assert done.returncode == 2


def test_graphs_recorded_under_another_thread_count_are_compiled_again_not_taken_as_cached(tiny_model_path,
                                                                                          no_records, monkeypatch):
    """torch's compile cache keys CPU kernels by the thread count: a record from a process on another count would
    send an engine to compile them at start-up (minutes) instead of in the background."""
    import torch

    started = []
    monkeypatch.setattr(background_compile, "child_command", lambda spec: started.append(spec) or [
        sys.executable, "-c", "import time; time.sleep(600)"])
    engine = engine_for(tiny_model_path, dtype="bfloat16", compile_in_background=True)
    spec = engine.runner._compile_spec()
    engine.shutdown(timeout=TIMEOUT)
    assert spec["threads"] == torch.get_num_threads() and started[0]["threads"] == spec["threads"]
    background_compile.record({**spec, "threads": spec["threads"] + 1}, 1.0)
    assert not background_compile.recorded(spec)
    again = engine_for(tiny_model_path, dtype="bfloat16", compile_in_background=True)
    try:
        assert again.runner.pending_compile is not None and len(started) == 2
    finally:
        again.shutdown(timeout=TIMEOUT)


COMPILE_SCRIPT = """
import json, sys
from torch._dynamo.utils import counters
from inference.engine.config import EngineConfig
from inference.engine.model_runner import ModelRunner
for path in sys.argv[1:]:
    runner = ModelRunner(path, EngineConfig(kv_cache_bytes=16 << 20), dtype="bfloat16", quantization="int4",
                         max_positions=256)
    assert runner.compiled is not None
print(json.dumps(dict(counters["inductor"])))
"""


def test_a_model_compiled_after_another_finds_its_graphs_cached_in_a_fresh_process(tiny_model_path, tmp_path):
    """A process that compiled one model's kernels compiles the next model's as a fresh process does (not with the
    sizes that differ made symbolic), so that a worker finds in torch's cache what a server or a test compiled."""
    import json
    import os
    import subprocess

    from inference.engine.tiny import build_tiny_model

    wider = str(build_tiny_model(tmp_path / "wider", hidden_size=128, intermediate_size=256))
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")

    def compile_in_a_process(*paths) -> dict:
        done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, *paths], cwd=background_compile.ROOT, env=env,
                              capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    compile_in_a_process(tiny_model_path, wider)  # the first model's kernels, then the wider one's
    fresh = compile_in_a_process(wider)
    assert fresh.get("fxgraph_cache_miss", 0) == 0 and fresh.get("fxgraph_cache_hit", 0) >= 3, fresh
