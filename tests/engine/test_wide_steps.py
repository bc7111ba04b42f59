"""Wide steps (wide_steps.py): on the CPU in bf16 with int4 weights, steps past the int4 kernels' rows may run in
float32 through float32 copies of the same weights; the KV cache stays bf16."""
import uuid
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from inference.engine import wide_steps
from inference.engine.config import EngineConfig
from inference.engine.engine import Engine
from inference.engine.linear import Int4Linear, Int8Linear
from inference.engine.types import GenerationRequest, SamplingParams

from .helpers import TIMEOUT, Collector
from .test_families import greedy_run

TEXT = "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill. " * 4


def bf16_engine(path, wide: str) -> Engine:
    engine = Engine(path, dtype="bfloat16", config=EngineConfig(kv_cache_bytes=16 << 20, wide_steps=wide,
                                                                enable_prefix_caching=False))
    engine.start()
    return engine


def prompt_scores(engine, ids) -> torch.Tensor:
    collector = Collector()
    engine.submit(GenerationRequest(f"w-{uuid.uuid4().hex[:8]}", ids,
                                    SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0)), collector)
    return torch.tensor([lp.logprob for event in collector.wait().events for lp in event.prompt_logprobs])


def float32_reference(path, decoder, ids) -> torch.Tensor:
    """transformers in float32 with the engine's own weights (the int4 layers' dequantized values): row p scores
    ids[p + 1]."""
    hf = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    model = hf.model
    with torch.no_grad():
        model.embed_tokens.weight.copy_(decoder.embed.float())
        model.norm.weight.copy_(decoder.norm.float())
        for layer, mine in zip(model.layers, decoder.layers):
            attn, mlp = layer.self_attn, layer.mlp
            for module, weight in zip((attn.q_proj, attn.k_proj, attn.v_proj), mine.qkv.dense.split(
                    [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features])):
                module.weight.copy_(weight)
            attn.o_proj.weight.copy_(mine.o.dense)
            gate, up = mine.gate_up.dense.split(mlp.gate_proj.out_features)
            mlp.gate_proj.weight.copy_(gate)
            mlp.up_proj.weight.copy_(up)
            mlp.down_proj.weight.copy_(mine.down.dense)
            layer.input_layernorm.weight.copy_(mine.in_norm.float())
            layer.post_attention_layernorm.weight.copy_(mine.post_norm.float())
        hf.lm_head.weight.copy_(decoder.lm_head.weight.float())
        logprobs = torch.log_softmax(hf(torch.tensor([ids])).logits[0].float(), dim=-1)
    return torch.tensor([logprobs[p, ids[p + 1]].item() for p in range(len(ids) - 1)])


def test_a_prefill_in_wide_steps_computes_what_float32_computes_with_the_same_weights(tiny_model_path):
    wide, narrow = bf16_engine(tiny_model_path, "float32"), bf16_engine(tiny_model_path, "off")
    try:
        assert wide.runner.decoder.wide_above == 16 and narrow.runner.decoder.wide_above is None
        assert wide.runner.decoder.layers[0].gate_up.dense.dtype == torch.float32
        ids = wide.tokenizer.encode_chat([{"role": "user", "content": TEXT}])
        assert len(ids) > 100
        reference = float32_reference(tiny_model_path, wide.runner.decoder, ids)
        wide_error = (prompt_scores(wide, ids) - reference).abs().mean()
        narrow_error = (prompt_scores(narrow, ids) - reference).abs().mean()
        # What is left in the wide step: the bf16 KV cache, the final hidden state and output layer in bf16.
        assert wide_error < 0.8 * narrow_error, (wide_error, narrow_error)
        assert wide_error < 1e-3
    finally:
        wide.shutdown(timeout=TIMEOUT)
        narrow.shutdown(timeout=TIMEOUT)


def test_decode_batches_past_the_int4_rows_run_wide_beside_prefills_and_agree_with_bf16(tiny_model_path):
    # 24 requests at once: steps mix prefill chunks with decode rows (which attend in bf16 through the decode
    # kernel), then decode steps of 24 rows, all wide.
    wide, narrow = bf16_engine(tiny_model_path, "float32"), bf16_engine(tiny_model_path, "off")
    try:
        prompts = [wide.tokenizer.encode_chat([{"role": "user", "content": "wave " * (k + 1) + TEXT[:k * 3]}])
                   for k in range(24)]
        got, expected = greedy_run(wide, prompts), greedy_run(narrow, prompts)
        assert all(len(tokens) == 12 for tokens in got)
        # Rounding may tip a near tie; the same computation in another precision agrees almost everywhere.
        first = sum(a[0] == b[0] for a, b in zip(got, expected))
        assert first >= 20, (first, got, expected)
    finally:
        wide.shutdown(timeout=TIMEOUT)
        narrow.shutdown(timeout=TIMEOUT)


@pytest.mark.parametrize("kind", [Int4Linear, Int8Linear])
def test_a_quantized_layers_dense_copy_in_float32_multiplies_many_rows_in_float32(kind):
    torch.manual_seed(0)
    weight, bias = torch.randn(64, 96).bfloat16(), torch.randn(64).bfloat16()
    layer = kind(weight, bias, dense_above=16, dense_dtype=torch.float32)
    same = kind(weight, bias, dense_above=16)
    assert same.dense.dtype == torch.bfloat16 and layer.dense.dtype == torch.float32
    # The same quantized weights (the float32 copy from the kernel's bf16 scales, the bf16 copy rounded).
    assert torch.allclose(layer.dense, same.dense.float(), rtol=1e-2, atol=1e-2)
    few_rows = torch.randn(3, 96).bfloat16()
    kernel = layer(few_rows)  # the quantized kernel, computing with those values
    assert torch.allclose(kernel.float(), torch.nn.functional.linear(few_rows.float(), layer.dense, bias.float()),
                          rtol=2e-2, atol=2e-2)
    many, few = torch.randn(40, 96).bfloat16(), torch.randn(3, 96).bfloat16()
    out = layer(many)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.nn.functional.linear(many.float(), layer.dense, bias.float()))
    assert torch.equal(layer(few), same(few))  # rows the quantized kernel takes are unchanged


def test_auto_times_both_and_keeps_the_model_dtype_unless_float32_is_clearly_faster(monkeypatch):
    shapes = [(3072, 576), (576, 1536)]
    for bf16, f32, chosen in ((0.025, 0.012, torch.float32), (0.025, 0.023, None), (0.010, 0.020, None),
                              (0.001, 0.0001, None)):  # the last: too small a model to be worth the memory
        times = {torch.bfloat16: bf16, torch.float32: f32}
        monkeypatch.setattr(wide_steps, "step_time", lambda shapes, dtype: times[dtype])
        assert wide_steps.choose(shapes, torch.bfloat16, "auto") is chosen, (bf16, f32)
    assert wide_steps.choose(shapes, torch.bfloat16, "float32") is torch.float32
    assert wide_steps.choose(shapes, torch.bfloat16, "off") is None
    assert wide_steps.choose(shapes, torch.float32, "float32") is None


def test_an_unknown_setting_is_refused_when_the_engine_is_configured():
    with pytest.raises(ValueError, match="wide_steps must be one of auto, float32, off"):
        EngineConfig(wide_steps="fp64")


def int4_decoder():
    """A decoder's worth of int4 layers with float32 dense copies (what wide_steps.int4_rows looks at)."""
    torch.manual_seed(0)

    def layer():
        return Int4Linear(torch.randn(64, 96).bfloat16(), dense_above=16, dense_dtype=torch.float32)

    return SimpleNamespace(layers=[SimpleNamespace(qkv=layer(), o=layer(), gate_up=layer(), down=layer())
                                   for _ in range(2)], dtype=torch.bfloat16)


def test_the_int4_row_limit_is_the_largest_where_the_int4_kernels_were_timed_no_slower(monkeypatch):
    decoder = int4_decoder()
    for timings, chosen in (({24: (0.036, 0.040), 32: (0.047, 0.046)}, 24),  # the benchmark machine's shape
                            ({24: (0.020, 0.040), 32: (0.050, 0.050)}, 32),
                            ({24: (0.041, 0.040), 32: (0.010, 0.050)}, 16),  # a larger limit needs the smaller too
                            ({24: (0.0001, 0.0002), 32: (0.0001, 0.0003)}, 16)):  # too small to time
        asked = []
        monkeypatch.setattr(wide_steps, "int4_times", lambda layers, rows, dtype: asked.append(rows) or timings[rows])
        assert wide_steps.int4_rows(decoder) == chosen, timings
        assert asked == ([24] if chosen == 16 else [24, 32])
    # Timed for real: the layers' own kernels, both ways, at the asked rows.
    monkeypatch.undo()
    int4, dense = wide_steps.int4_times([decoder.layers[0].qkv], 24, torch.bfloat16)
    assert int4 > 0 and dense > 0
    # No int4 layers: nothing timed.
    dense_only = SimpleNamespace(layers=[SimpleNamespace(qkv=object(), o=object(), gate_up=object(), down=object())],
                                 dtype=torch.bfloat16)
    monkeypatch.setattr(wide_steps, "int4_times", lambda *args: pytest.fail("timed a decoder without int4 layers"))
    assert wide_steps.int4_rows(dense_only) == 16
