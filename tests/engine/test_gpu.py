"""The engine on a GPU, in bfloat16: what transformers answers, with and without CUDA graphs and the prefix cache.

Skipped without CUDA (CI has none): `bench/gpu.sh` runs these on a GPU host,
offline, on random small models built here.

Greedy decoding in bf16 is compared with a tie rule: two correct bf16 programs
may round a near-tie either way, so tokens must match up to the first step
where transformers' own top two logits lie within TIE of each other, and that
prefix must cover most of each answer.
"""
import pytest
import torch

from inference.engine.config import EngineConfig
from inference.engine.engine import Engine
from inference.engine.tiny import build_tiny_model
from inference.engine.types import GenerationRequest, SamplingParams

from .helpers import TIMEOUT, Collector

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TIE = 0.05  # logits closer than this are a near-tie in bf16
TOKENS = 24


@pytest.fixture(scope="module")
def gpu_model(tmp_path_factory):
    """A random tiny Qwen2 (q/k/v biases) whose logits are spread out (a scaled head): near-ties are rare."""
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(tmp_path_factory.mktemp("gpu-model"), family="qwen2")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20)
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def reference(gpu_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gpu_model, local_files_only=True, dtype=torch.bfloat16)
    return model.to("cuda").eval()


def hf_greedy(model, prompt):
    """transformers' bf16 greedy tokens and, per step, the gap between its top two logits."""
    ids = torch.tensor([prompt], device="cuda")
    tokens, gaps = [], []
    with torch.inference_mode():
        for _ in range(TOKENS):
            logits = model(ids).logits[0, -1].float()
            top = logits.topk(2)
            tokens.append(int(top.indices[0]))
            gaps.append(float(top.values[0] - top.values[1]))
            ids = torch.cat([ids, top.indices[:1].view(1, 1)], dim=1)
    return tokens, gaps


def assert_same_greedy(got, expected, gaps):
    firm = next((i for i, gap in enumerate(gaps) if gap < TIE), len(gaps))
    assert got[:firm] == expected[:firm], f"differs before the first near-tie, at step {firm}"
    assert firm >= TOKENS // 2, f"a near-tie already at step {firm}: the comparison would say little"


def prompts_for(engine):
    tok = engine.tokenizer
    return [tok.encode_chat([{"role": "user", "content": "tell me " * k + "about ships"}]) for k in (1, 4, 9, 20, 2)]


def run(engine, prompts, salt=None):
    collectors = [Collector() for _ in prompts]
    params = SamplingParams(max_tokens=TOKENS, temperature=0, ignore_eos=True)
    for i, (prompt, c) in enumerate(zip(prompts, collectors)):
        engine.submit(GenerationRequest(f"g{i}-{id(c)}", prompt, params, cache_salt=salt), c)
    return [[t for e in c.wait().events for t in e.token_ids] for c in collectors], [c.final for c in collectors]


def gpu_engine(path, **kwargs):
    config = EngineConfig(max_num_batched_tokens=kwargs.pop("budget", 1024),
                          enable_prefix_caching=kwargs.pop("prefix_caching", True))
    engine = Engine(path, device="cuda", dtype="bfloat16", config=config, **kwargs)
    engine.start()
    return engine


def test_bf16_greedy_equals_transformers_over_a_mixed_batch(gpu_model, reference):
    # A small token budget: prefill chunks share steps with decodes.
    engine = gpu_engine(gpu_model, budget=48, gpu_memory_utilization=0.3)
    try:
        assert engine.runner.backend == "flex" and engine.runner.dtype == torch.bfloat16
        assert engine.config.num_blocks * engine.config.block_size > 100_000  # sized from free GPU memory
        prompts = prompts_for(engine)
        outputs, _ = run(engine, prompts)
        for prompt, got in zip(prompts, outputs):
            expected, gaps = hf_greedy(reference, prompt)
            assert_same_greedy(got, expected, gaps)
    finally:
        engine.shutdown(timeout=TIMEOUT)


def test_cuda_graphs_give_the_same_tokens_as_eager_steps(gpu_model):
    # Four prompts, prefilled in one step, then decoded as one batch of 4: a captured bucket, so
    # both modes run the same kernels on the same shapes and must agree token for token.
    results = {}
    for eager in (False, True):
        engine = gpu_engine(gpu_model, enforce_eager=eager, gpu_memory_utilization=0.3)
        try:
            assert (engine.runner.graphs is None) == eager
            if not eager:
                assert engine.runner.graphs.fits(4) and 4 in engine.runner.graphs.buckets
            results[eager], _ = run(engine, prompts_for(engine)[:4])
        finally:
            engine.shutdown(timeout=TIMEOUT)
    assert results[False] == results[True]


def test_the_prefix_cache_changes_no_output(gpu_model, reference):
    engine = gpu_engine(gpu_model, gpu_memory_utilization=0.3)
    try:
        prompts = prompts_for(engine)
        first, finals = run(engine, prompts, salt="org")
        again, finals_again = run(engine, prompts, salt="org")
        assert all(f.cached_tokens == 0 for f in finals)
        assert all(f.cached_tokens > 0 for f, p in zip(finals_again, prompts) if len(p) > 32)
        for prompt, got in zip(prompts, again):
            expected, gaps = hf_greedy(reference, prompt)
            assert_same_greedy(got, expected, gaps)
    finally:
        engine.shutdown(timeout=TIMEOUT)
