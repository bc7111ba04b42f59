"""The real default model in each precision: float32 is transformers exactly; the CPU default stays faithful.

The CPU default (bf16 activations, int4 weights on the GGUF's own grid, a refined
output layer) cannot be bit-identical to float32, so its check is top-1 agreement:
along the engine's own greedy answers, the share of positions where float32
transformers, given the same prefix, picks the same token (bench/precision.py
prints it for every precision).
"""
import os
from pathlib import Path

import pytest
import torch

from inference.engine.config import EngineConfig
from inference.engine.engine import Engine
from inference.engine.types import GenerationRequest, SamplingParams

from .helpers import Collector

REAL_MODEL = Path(__file__).resolve().parents[2] / "var" / "models" / "smollm2-135m-instruct"
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Explain photosynthesis simply.",
           "Who wrote Romeo and Juliet?", "Why is the sky blue?", "How do I boil an egg?",
           "What does a lighthouse do?", "Describe a cat in two sentences."]
TOKENS = 24

pytestmark = pytest.mark.skipif(
    os.environ.get("ENGINE_GGUF_TESTS") != "1" or not (REAL_MODEL / "config.json").exists(),
    reason="runs the real 135M model (~40 s); set ENGINE_GGUF_TESTS=1",
)


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(REAL_MODEL, local_files_only=True, dtype=torch.float32).eval()


def answers(one_at_a_time=False, **engine_options):
    """The engine's greedy answers to PROMPTS: all submitted at once (decoded as a batch), or one at a time."""
    engine = Engine(str(REAL_MODEL), config=EngineConfig(kv_cache_bytes=256 << 20), **engine_options)
    engine.start()
    try:
        prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]
        collectors = [Collector() for _ in prompts]
        params = SamplingParams(max_tokens=TOKENS, temperature=0, ignore_eos=True)
        for i, (prompt, c) in enumerate(zip(prompts, collectors)):
            engine.submit(GenerationRequest(f"p{i}", prompt, params), c)
            if one_at_a_time:
                c.wait()
        return engine.runner, prompts, [[t for e in c.wait().events for t in e.token_ids] for c in collectors]
    finally:
        engine.shutdown()


def reference_picks(model, prompt, answer):
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:-1]
    return logits.argmax(-1).tolist()


def test_float32_greedy_is_transformers_greedy(reference):
    _, prompts, outputs = answers(dtype="float32")
    for prompt, answer in zip(prompts, outputs):
        assert answer == reference_picks(reference, prompt, answer)


@pytest.mark.parametrize("one_at_a_time", [False, True], ids=["batched", "one-at-a-time"])
def test_the_cpu_default_agrees_with_float32_on_the_next_token_almost_everywhere(reference, one_at_a_time):
    runner, prompts, outputs = answers(one_at_a_time)  # dtype and quantization "auto"
    if runner.dtype != torch.bfloat16:
        pytest.skip("no vectorised int4 kernel on this CPU: the default is float32, checked above")
    assert runner.quantization == "int4"
    # Decodes run through the compiled graphs (compiled_decode.py): a call per token one at a time, a call per step
    # of all eight in a batch.
    assert runner.compiled is not None and (runner.compiled.calls > len(PROMPTS) * (TOKENS - 2)) is one_at_a_time
    same = sum(p == a for prompt, answer in zip(prompts, outputs)
               for p, a in zip(reference_picks(reference, prompt, answer), answer))
    assert same / (len(PROMPTS) * TOKENS) >= 0.95  # measured 99.2% over bench/precision.py's 16 prompts
