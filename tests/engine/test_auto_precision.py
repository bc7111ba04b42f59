"""What `auto` precision picks on a CPU: bf16 with int4 weights wherever torch's int4 kernel is vectorised (AVX2,
AVX-512, bf16 instructions), float32 with dense weights elsewhere and for models the lean decoder does not run on a
CPU without bf16 instructions (precision.py)."""
import pytest
import torch

from inference.engine import model_runner, precision
from inference.engine.config import EngineConfig
from inference.engine.decoder import unsupported_reason
from inference.engine.model_runner import ModelRunner
from inference.engine.precision import resolve_dtype, resolve_quantization

CPU = torch.device("cpu")


@pytest.mark.parametrize("capability, bf16, expected", [
    ("AVX2", False, torch.bfloat16),  # int4's AVX2 loops convert bf16 activations themselves
    ("AVX512", False, torch.bfloat16),
    ("AVX512", True, torch.bfloat16),
    ("NO AVX", False, torch.float32),  # no vectorised int4 kernel: float32 dense
    ("DEFAULT", False, torch.float32),
    ("SVE256", True, torch.bfloat16),  # an ARM CPU with bf16 instructions
])
def test_auto_picks_bf16_with_int4_where_the_int4_kernel_is_vectorised(monkeypatch, capability, bf16, expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: bf16)
    dtype = resolve_dtype("auto", CPU)
    assert dtype == expected
    assert resolve_quantization("auto", CPU, dtype) == ("int4" if expected == torch.bfloat16 else "none")
    # An explicit dtype is taken as given: float32 stays transformers' dense arithmetic.
    assert resolve_dtype("float32", CPU) == torch.float32
    assert resolve_quantization("auto", CPU, torch.float32) == "none"


def runner(path, **options) -> ModelRunner:
    return ModelRunner(path, EngineConfig(kv_cache_bytes=16 << 20, max_num_batched_tokens=40), enforce_eager=True,
                       max_positions=256, **options)


def test_on_an_avx2_cpu_without_bf16_instructions_the_default_runs_int4_in_the_lean_decoder_and_float32_otherwise(
        tiny_model_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(model_runner, "cpu_has_bf16", lambda: False)
    lean = runner(tiny_model_path)
    assert lean.dtype == torch.bfloat16 and lean.quantization == "int4" and lean.decoder is not None
    assert lean.model.dtype == torch.bfloat16
    # Its KV cache in float32 (bf16 keys converted in every decode step's attention were 3.2x slower there), sized
    # by float32's bytes, and the compiled graphs' record tells the two apart.
    assert lean.cache.k[0].dtype == torch.float32
    assert lean._compile_spec()["kv_dtype"] == "float32"
    # And steps of more than 8 sequences multiply by a float32 copy of the int4 output layer (emulated bf16 matmuls
    # were 4x slower there): the logits of 12 rows are float32's, while up to 8 rows the int4 kernel refines them.
    head = lean.decoder.lm_head
    assert head.dense.dtype == torch.float32 and head.weight.dtype == torch.bfloat16
    assert lean._compile_spec()["kv_dtype"] == str(head.dense.dtype).removeprefix("torch.")  # the record names it
    hidden = torch.randn(12, head.weight.shape[1]).to(torch.bfloat16)
    logits = lean.decoder.logits(hidden)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, hidden.float() @ head.weight.float().t())
    assert lean.decoder.logits(hidden[:8]).dtype == torch.bfloat16
    # A family the lean decoder does not run multiplies dense weights in transformers' modules: float32 there.
    monkeypatch.setattr(model_runner, "unsupported_reason", lambda model: "a model type it does not know")
    other = runner(tiny_model_path)
    assert other.dtype == torch.float32 and other.quantization == "none" and other.decoder is None
    assert other.model.dtype == torch.float32 and other.cache.k[0].dtype == torch.float32
    # Asked for bf16 by name, it gets bf16 all the same.
    assert runner(tiny_model_path, dtype="bfloat16").model.dtype == torch.bfloat16
    # With bf16 instructions, bf16 stays for such a model too (its dense bf16 matmuls are native there), and so
    # does the KV cache.
    monkeypatch.setattr(model_runner, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    native = runner(tiny_model_path)
    assert native.dtype == torch.bfloat16 and native.cache.k[0].dtype == torch.bfloat16
    assert native._compile_spec()["kv_dtype"] is None
    monkeypatch.setattr(model_runner, "unsupported_reason", unsupported_reason)
    native_lean = runner(tiny_model_path)
    assert native_lean.decoder.lm_head.dense is native_lean.decoder.lm_head.weight  # no copy: bf16 is native there
    assert native_lean._compile_spec()["kv_dtype"] is None
