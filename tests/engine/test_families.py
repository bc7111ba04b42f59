"""The engine runs transformers' own model definitions for the main decoder families."""
import pytest

from inference.engine.config import EngineConfig
from inference.engine.engine import Engine
from inference.engine.tiny import FAMILIES, build_tiny_model
from inference.engine.types import GenerationRequest, SamplingParams

from .helpers import TIMEOUT, Collector, greedy_tokens


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_greedy_batch_equals_transformers_for_each_family(family, tmp_path):
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(tmp_path / family, family=family)
    reference = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    assert reference.config.model_type == family
    engine = Engine(str(path), dtype="float32", config=EngineConfig(kv_cache_bytes=16 << 20, max_num_batched_tokens=40))
    engine.start()
    try:
        prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": "wave " * k}]) for k in (1, 7, 15)]
        collectors = [Collector() for _ in prompts]
        params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
        for i, (prompt, c) in enumerate(zip(prompts, collectors)):
            engine.submit(GenerationRequest(f"{family}-{i}", prompt, params), c)
        for prompt, c in zip(prompts, collectors):
            c.wait()
            assert [t for e in c.events for t in e.token_ids] == greedy_tokens(reference, prompt, 12)
    finally:
        engine.shutdown(timeout=TIMEOUT)


def greedy_run(engine, prompts, max_tokens=12):
    collectors = [Collector() for _ in prompts]
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    for i, (prompt, c) in enumerate(zip(prompts, collectors)):
        engine.submit(GenerationRequest(f"g{i}-{id(c)}", prompt, params), c)
    return [[t for e in c.wait().events for t in e.token_ids] for c in collectors]


@pytest.mark.parametrize("backend", ["sdpa", "inductor", "flex"])
def test_every_attention_backend_gives_transformers_greedy_output(backend, tiny_model_path, hf_model):
    engine = Engine(tiny_model_path, dtype="float32", attention_backend=backend,
                    config=EngineConfig(kv_cache_bytes=16 << 20, max_num_batched_tokens=40))
    engine.start()
    try:
        prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": "wave " * k}]) for k in (1, 7, 15)]
        for prompt, tokens in zip(prompts, greedy_run(engine, prompts)):
            assert tokens == greedy_tokens(hf_model, prompt, 12)
    finally:
        engine.shutdown(timeout=TIMEOUT)


def test_models_the_lean_decoder_does_not_cover_run_transformers_modules(tiny_model_path, hf_model, monkeypatch):
    from inference.engine import model_runner

    monkeypatch.setattr(model_runner, "unsupported_reason", lambda model: "a model type it does not know")
    engine = Engine(tiny_model_path, dtype="float32", quantization="int4",
                    config=EngineConfig(kv_cache_bytes=16 << 20, max_num_batched_tokens=40))
    engine.start()
    try:
        assert engine.runner.decoder is None and engine.runner.quantization == "none"
        prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": "wave " * k}]) for k in (2, 9)]
        for prompt, tokens in zip(prompts, greedy_run(engine, prompts)):
            assert tokens == greedy_tokens(hf_model, prompt, 12)
    finally:
        engine.shutdown(timeout=TIMEOUT)
