"""What an engine times at start-up is timed once per machine and remembered (machine_timings.py): a later start
whose timing would come out the other way keeps the first choice, and with it its compiled graphs."""
import json
import threading
import time

import pytest
import torch

from inference.engine import background_compile, machine_timings, wide_steps
from inference.engine.config import EngineConfig
from inference.engine.model_runner import ModelRunner


@pytest.fixture
def memory(tmp_path, monkeypatch):
    monkeypatch.setattr(machine_timings, "folder", lambda: tmp_path / "engine-timings")
    return tmp_path / "engine-timings"


def test_a_choice_is_measured_once_then_read_back_and_a_different_key_or_machine_measures_again(memory, monkeypatch):
    measured = []

    def measure(value):
        return lambda: measured.append(value) or value

    assert machine_timings.remembered("int4_rows", {"layers": [[64, 96]]}, measure(24)) == 24
    assert machine_timings.remembered("int4_rows", {"layers": [[64, 96]]}, measure(32)) == 24  # not measured again
    assert measured == [24]
    assert machine_timings.remembered("int4_rows", {"layers": [[64, 128]]}, measure(16)) == 16  # other shapes
    assert machine_timings.remembered("wide_dtype", {"layers": [[64, 96]]}, measure(None)) is None  # another choice
    assert machine_timings.remembered("wide_dtype", {"layers": [[64, 96]]}, measure("float32")) is None
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1) if threads > 1 else 2)  # another thread count: timed again
    try:
        assert machine_timings.remembered("int4_rows", {"layers": [[64, 96]]}, measure(32)) == 32
    finally:
        torch.set_num_threads(threads)
    assert measured == [24, 16, None, 32]
    # Each file says what it was measured for.
    stored = [json.loads(path.read_text()) for path in sorted(memory.glob("int4_rows-*.json"))]
    assert sorted(entry["value"] for entry in stored) == [16, 24, 32]
    assert all(entry["described"]["machine"]["torch"] == torch.__version__ for entry in stored)


def test_a_damaged_record_is_measured_again_and_an_unwritable_folder_still_gives_the_measured_choice(memory,
                                                                                                       monkeypatch):
    assert machine_timings.remembered("int4_rows", {"k": 1}, lambda: 24) == 24
    [path] = memory.glob("int4_rows-*.json")
    path.write_text("{not json")
    assert machine_timings.remembered("int4_rows", {"k": 1}, lambda: 32) == 32
    assert json.loads(path.read_text())["value"] == 32
    blocked = memory.parent / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(machine_timings, "folder", lambda: blocked / "engine-timings")  # cannot be created
    calls = []
    for _ in range(2):
        assert machine_timings.remembered("int4_rows", {"k": 1}, lambda: calls.append(1) or 16) == 16
    assert len(calls) == 2  # timed at every start, without failing one


def test_engines_starting_together_measure_once(memory):
    calls, results = [], []

    def measure():
        calls.append(1)
        time.sleep(0.3)  # the second start arrives while the first measures
        return 24

    starts = [threading.Thread(target=lambda: results.append(machine_timings.remembered("int4_rows", {"k": 2},
                                                                                        measure)))
              for _ in range(2)]
    for start in starts:
        start.start()
    for start in starts:
        start.join()
    assert results == [24, 24] and calls == [1]


def test_a_second_start_whose_timing_flips_keeps_the_first_int4_limit_and_finds_its_graphs_recorded(
        tiny_model_path, memory, monkeypatch, tmp_path):
    timed = iter([24, 16])  # the first start times 24 rows no slower; the next would not
    monkeypatch.setattr(wide_steps, "int4_rows", lambda decoder: next(timed))
    monkeypatch.setattr(background_compile, "records_dir", lambda: tmp_path / "records")

    def start() -> ModelRunner:
        return ModelRunner(tiny_model_path, EngineConfig(kv_cache_bytes=16 << 20, max_num_batched_tokens=40),
                           dtype="bfloat16", enforce_eager=True, max_positions=256)

    first = start()
    assert first.quantization == "int4" and first.decoder.dense_above == 24
    background_compile.record(first._compile_spec(), 1.0)  # its graphs compiled
    second = start()
    assert second.decoder.dense_above == 24
    assert {layer.gate_up.dense_above for layer in second.decoder.layers} == {24}
    assert background_compile.recorded(second._compile_spec())  # nothing to compile again
    assert next(timed) == 16  # timed by the first start only


def test_the_wide_dtype_is_timed_once_per_machine_too(memory, monkeypatch):
    shapes = [(3072, 576), (576, 1536)]
    times = {torch.bfloat16: 0.025, torch.float32: 0.012}  # float32 clearly faster: chosen
    monkeypatch.setattr(wide_steps, "step_time", lambda shapes, dtype: times[dtype])
    assert wide_steps.remembered_choice(shapes, torch.bfloat16) is torch.float32
    times[torch.float32] = 0.030  # a later start that would time it slower keeps the first choice
    assert wide_steps.remembered_choice(shapes, torch.bfloat16) is torch.float32
    assert wide_steps.choose(shapes, torch.bfloat16) is None  # (what timing alone would now say)
    # Settings that time nothing are not remembered.
    assert wide_steps.remembered_choice(shapes, torch.bfloat16, "off") is None
    assert wide_steps.remembered_choice(shapes, torch.float32) is None
    assert len(list(memory.glob("wide_dtype-*.json"))) == 1
