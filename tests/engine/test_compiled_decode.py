"""CPU decode steps of up to MAX_ROWS sequences run as one compiled graph (compiled_decode.py) and compute what the
eager step does."""
import threading

import pytest
import torch

from inference.engine.compiled_decode import MAX_ROWS, CompiledDecode
from inference.engine.config import EngineConfig
from inference.engine.engine import Engine
from inference.engine.model_runner import ModelRunner
from inference.engine.types import GenerationRequest, SamplingParams

from .helpers import TIMEOUT, Collector, greedy_tokens
from .test_families import greedy_run


def engine_for(path, wide_steps="auto", **options):
    engine = Engine(path, config=EngineConfig(kv_cache_bytes=16 << 20, max_num_batched_tokens=40,
                                              wide_steps=wide_steps), **options)
    engine.start()
    return engine


def test_the_cpu_default_precision_compiles_one_sequence_decodes_and_enforce_eager_or_float32_do_not(
        tiny_model_path):
    for options, compiled in (({"dtype": "bfloat16"}, True), ({"dtype": "bfloat16", "enforce_eager": True}, False),
                              ({"dtype": "float32"}, False), ({"dtype": "bfloat16", "attention_backend": "sdpa"},
                                                              False)):
        engine = engine_for(tiny_model_path, **options)
        try:
            assert (engine.runner.compiled is not None) is compiled, options
            warm_up = engine.runner.compiled.calls if compiled else 0  # the runner's own warm-up step
            prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "wave " * 3}])
            [tokens] = greedy_run(engine, [prompt])
            assert len(tokens) == 12
            if compiled:  # the prefill samples the first token; each of the 11 others is one compiled step
                assert engine.runner.compiled.calls - warm_up == 11
        finally:
            engine.shutdown(timeout=TIMEOUT)


def test_compiled_one_sequence_decodes_give_transformers_greedy_output_in_float32(tiny_model_path, hf_model):
    engine = engine_for(tiny_model_path, dtype="float32")
    try:
        # float32 runs eager by default (transformers' arithmetic op for op): compiled here on purpose, where its
        # fused arithmetic differs only in the last bits.
        engine.runner.compiled = compiled = CompiledDecode(engine.runner.decoder, engine.runner.cache)
        # One at a time, each through the graph; the longest crosses block boundaries (its table widens).
        for words in (1, 7, 30):
            prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "wave " * words}])
            assert greedy_run(engine, [prompt], max_tokens=24) == [greedy_tokens(hf_model, prompt, 24)]
        assert compiled.calls == 3 * 23
    finally:
        engine.shutdown(timeout=TIMEOUT)


def test_decode_steps_of_several_sequences_run_compiled_and_give_transformers_greedy_output(tiny_model_path,
                                                                                            hf_model):
    import torch._dynamo.utils

    engine = engine_for(tiny_model_path, dtype="float32")
    try:
        engine.runner.compiled = compiled = CompiledDecode(engine.runner.decoder, engine.runner.cache)
        prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": "wave " * k}]) for k in (1, 7, 30)]
        assert greedy_run(engine, prompts, max_tokens=24) == [greedy_tokens(hf_model, p, 24) for p in prompts]
        assert compiled.calls >= 23  # the three decode together, each step one call of the graph
        # Every count of rows up to MAX_ROWS runs through the graphs made so far: none is compiled while serving.
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        before = compiled.calls
        many = [engine.tokenizer.encode_chat([{"role": "user", "content": f"wave {k}"}]) for k in range(MAX_ROWS)]
        assert greedy_run(engine, many, max_tokens=6) == [greedy_tokens(hf_model, p, 6) for p in many]
        assert compiled.calls > before
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    finally:
        engine.shutdown(timeout=TIMEOUT)


# Wide steps in float32 (where a CPU multiplies float32 faster: wide_steps.py) or not: the steps that mix decodes with
# a prefill chunk past 16 rows then run their decodes' attention on converted queries, which must not compile again.
@pytest.mark.parametrize("wide", ["off", "float32"])
def test_start_up_compiles_the_graphs_of_every_decode_step_up_to_max_rows_in_the_cpu_default(tiny_model_path, wide):
    import torch._dynamo.utils

    engine = engine_for(tiny_model_path, wide, dtype="bfloat16")  # int4 weights where the CPU has bf16 instructions
    try:
        assert (engine.runner.decoder.wide_above is not None) is (wide == "float32")
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        compiled = engine.runner.compiled
        for rows in (MAX_ROWS, 9, 3):  # a graph each: 9..16 rows, 2..8 rows (and one row, the others' last steps)
            before = compiled.calls
            prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": f"wave {k}"}]) for k in range(rows)]
            assert [len(tokens) for tokens in greedy_run(engine, prompts, max_tokens=6)] == [6] * rows
            assert compiled.calls > before
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # nothing compiled while serving
    finally:
        engine.shutdown(timeout=TIMEOUT)


@pytest.mark.parametrize("dtype, tolerance, rows, bf16_cpu", [
    ("float32", 1e-4, 1, True), ("bfloat16", 0.05, 1, True), ("bfloat16", 0.05, 5, True), ("bfloat16", 0.05, 12, True),
    ("bfloat16", 0.08, 5, False)])  # a CPU without bf16 instructions: a float32 cache (precision.dense_copy_dtype)
def test_a_compiled_step_writes_the_same_cache_and_gives_the_same_logits_as_the_eager_step(tiny_model_path, dtype,
                                                                                           tolerance, rows, bf16_cpu,
                                                                                           monkeypatch):
    from inference.engine import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: bf16_cpu)
    # In bf16 (int4 weights) each graph: one row, 2..8 rows (the output layer refines int4 logits), 9..16 rows (the
    # output layer dense, the others still int4).
    runner = ModelRunner(tiny_model_path, EngineConfig(kv_cache_bytes=8 << 20, max_num_batched_tokens=40),
                         dtype=dtype, max_positions=256)
    assert runner.cache._storage.dtype == (torch.float32 if dtype == "float32" or not bf16_cpu else torch.bfloat16)
    compiled = runner.compiled or CompiledDecode(runner.decoder, runner.cache)
    generator = torch.Generator().manual_seed(0)
    storage = runner.cache._storage
    before_step = torch.randn(storage.shape, generator=generator).to(storage.dtype)  # earlier tokens, say
    bs = runner.block_size
    # Row r: a sequence of 40 - r earlier tokens in blocks of its own, decoding its next token.
    tables = [[3 * r + 2, 3 * r + 4, 3 * r + 3] for r in range(rows)]
    positions = [39 - r for r in range(rows)]
    slots = [table[p // bs] * bs + p % bs for table, p in zip(tables, positions)]

    def step(kernel):
        storage.copy_(before_step)  # each step from the same cache: what it writes is all that differs
        runner.compiled = kernel
        host, host_tables = runner._host.numpy(), runner._host_tables.numpy()
        for r in range(rows):
            host[:, r] = (11 + r, positions[r], slots[r], positions[r] + 1)
            host_tables[r, :3] = tables[r]
        meta = runner._upload(rows, rows, 3)
        with torch.inference_mode():
            logits = runner._forward(runner._buf[0, :rows], runner._buf[1, :rows], meta, list(range(rows)))
        return logits, storage.clone()

    eager_logits, eager_cache = step(None)
    before = compiled.calls
    compiled_logits, compiled_cache = step(compiled)
    assert compiled.calls == before + 1
    scale = eager_logits.abs().max().item()
    torch.testing.assert_close(compiled_logits, eager_logits, atol=tolerance * scale, rtol=0)
    # The step's keys and values land at its slots in every layer, in place, and nowhere else.
    torch.testing.assert_close(compiled_cache.float(), eager_cache.float(), atol=tolerance * 10, rtol=0)
    written = (compiled_cache != before_step).nonzero()[:, 3].unique().tolist()  # [2, layers, Hkv, slots, D]
    assert written == sorted(slots) and runner.cache._storage is storage


def test_a_decode_step_that_fails_to_compile_leaves_decodes_eager_and_the_engine_serving(tiny_model_path, hf_model,
                                                                                         monkeypatch, caplog):
    def broken(self, *args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(CompiledDecode, "__call__", broken)
    engine = engine_for(tiny_model_path, dtype="bfloat16")
    try:
        assert engine.runner.compiled is None and engine.runner.backend == "inductor"
        assert "the compiled decode step failed to compile" in caplog.text
        prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "wave"}])
        assert len(greedy_run(engine, [prompt])[0]) == 12
    finally:
        engine.shutdown(timeout=TIMEOUT)


def test_a_step_mixing_one_decode_with_a_prefill_compiles_nothing_while_serving(tiny_model_path):
    import torch._dynamo.utils

    engine = engine_for(tiny_model_path, dtype="bfloat16")
    try:
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]  # what start-up compiled
        prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "wave"}])
        decoding, second = threading.Event(), Collector()
        first = Collector(lambda event: len(first.events) == 3 and decoding.set())
        engine.submit(GenerationRequest("first", prompt, SamplingParams(max_tokens=400, ignore_eos=True)), first)
        assert decoding.wait(TIMEOUT)
        # The next step decodes the first (one row, eager: prefill rows share the step) and prefills this one.
        other = engine.tokenizer.encode_chat([{"role": "user", "content": "wave " * 9}])  # no prefix of the first
        engine.submit(GenerationRequest("second", other, SamplingParams(max_tokens=3)), second)
        assert first.wait().final.completion_tokens == 400 and second.wait().final.finish_reason
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    finally:
        engine.shutdown(timeout=TIMEOUT)


def test_where_int4_is_timed_no_slower_up_to_24_rows_decode_steps_of_up_to_24_run_compiled(tiny_model_path, monkeypatch):
    import torch._dynamo.utils

    from inference.engine import background_compile, wide_steps

    monkeypatch.setattr(wide_steps, "remembered_int4_rows", lambda decoder: 24)  # what the benchmark machine times
    engine = engine_for(tiny_model_path, dtype="bfloat16")
    try:
        runner = engine.runner
        assert runner.decoder.dense_above == 24 and runner.compiled.max_rows == 24
        assert {layer.gate_up.dense_above for layer in runner.decoder.layers} == {24}
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        for rows in (20, 24):  # 9..24 rows: one graph, compiled at start-up
            before = runner.compiled.calls
            prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": f"wave {k}"}]) for k in range(rows)]
            assert [len(tokens) for tokens in greedy_run(engine, prompts, max_tokens=6)] == [6] * rows
            assert runner.compiled.calls > before
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
        # A background compile's child builds the same graphs: it is told the limit, which keys the graphs' record.
        spec = runner._compile_spec()
        assert spec["int4_rows"] == 24
        assert background_compile.graph_key(spec) != background_compile.graph_key({**spec, "int4_rows": 16})
    finally:
        engine.shutdown(timeout=TIMEOUT)


def test_a_compile_child_builds_its_runner_with_the_int4_row_limit_its_engine_chose(tmp_path, monkeypatch):
    import json
    import os

    from inference.engine import background_compile, compile_child

    built = {}

    class Runner:
        def __init__(self, *args, **kwargs):
            built.update(kwargs)
            self.compiled = object()

    monkeypatch.setattr(compile_child, "ModelRunner", Runner)
    monkeypatch.setattr(compile_child, "_die_with", lambda parent: None)
    monkeypatch.setattr(compile_child.os, "nice", lambda increment: 0)
    monkeypatch.setattr(compile_child, "records_dir", lambda: tmp_path)
    monkeypatch.setattr(background_compile, "records_dir", lambda: tmp_path)
    (tmp_path / "config.json").write_text("{}")
    spec = {"model_path": str(tmp_path), "dtype": "bfloat16", "quantization": "int4", "attention_backend": "inductor",
            "max_positions": 256, "int4_rows": 24, "config": {"block_size": 16, "max_num_seqs": 64,
                                                              "max_num_batched_tokens": 40}, "parent": os.getpid()}
    assert compile_child.main([json.dumps(spec)]) == 0
    assert built["int4_rows"] == 24 and built["compile_only"] is True
