"""`manage.py inference_worker`: its engine options reach the engine, and bad values stop it before it loads."""
import pytest
from django.core.management import CommandError, call_command

from inference.queue import worker


@pytest.fixture
def captured(monkeypatch, settings, tiny_model_path, tmp_path):
    """Run the command up to the point where a worker would start; return what it would start it with."""
    import json

    models = tmp_path / "models.json"
    models.write_text(json.dumps({"tiny": {"path": tiny_model_path, "input_usd_per_mtok": "1",
                                           "output_usd_per_mtok": "2", "dtype": "float32"}}))
    settings.MODELS_FILE = str(models)
    settings.INFERENCE_QUEUE_URL = "redis://127.0.0.1:1/0"
    from core import catalogue as registry

    registry._catalogue.cache_clear()
    seen = {}
    monkeypatch.setattr(worker, "run_worker", lambda **kwargs: seen.update(kwargs) or 0)
    yield seen
    registry._catalogue.cache_clear()


def test_flags_win_over_the_model_file_and_the_settings(captured):
    call_command("inference_worker", "--model", "tiny", "--quantization", "int8", "--no-prefix-cache",
                 "--max-running", "8", "--enforce-eager", "--gpu-memory-utilization", "0.5")
    factory = captured["engine_factory"]
    assert factory.keywords["dtype"] == "float32"  # the model's own choice, no flag given
    assert factory.keywords["quantization"] == "int8"
    assert factory.keywords["enable_prefix_caching"] is False and factory.keywords["max_num_seqs"] == 8
    assert factory.keywords["enforce_eager"] is True and factory.keywords["gpu_memory_utilization"] == 0.5
    assert factory.keywords["kv_cache_bytes"] == 1024 << 20  # the CPU keeps INFERENCE_KV_CACHE_MB


def test_on_a_gpu_the_cache_is_sized_from_free_memory_unless_given(captured):
    call_command("inference_worker", "--model", "tiny", "--device", "cuda:0")
    assert captured["engine_factory"].keywords["kv_cache_bytes"] is None
    call_command("inference_worker", "--model", "tiny", "--device", "cuda:0", "--kv-cache-mb", "512")
    assert captured["engine_factory"].keywords["kv_cache_bytes"] == 512 << 20


@pytest.mark.parametrize("args, message", [
    (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
    (["--kv-cache-mb", "4"], "--kv-cache-mb"),
    (["--max-running", "0"], "--max-running"),
    (["--max-model-len", "0"], "--max-model-len"),
    (["--stall-timeout", "-1"], "--stall-timeout"),
    (["--stall-timeout", "nan"], "--stall-timeout"),
])
def test_bad_values_stop_the_worker_before_it_loads_anything(captured, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("inference_worker", "--model", "tiny", *args)
    assert not captured


def test_the_context_window_comes_from_the_flag_else_the_models_file_else_the_setting(captured, settings):
    call_command("inference_worker", "--model", "tiny")
    assert captured["engine_factory"].keywords["max_model_len"] is None  # the model's own window
    settings.INFERENCE_MAX_MODEL_LEN = 1024
    call_command("inference_worker", "--model", "tiny")
    assert captured["engine_factory"].keywords["max_model_len"] == 1024
    call_command("inference_worker", "--model", "tiny", "--max-model-len", "512")
    assert captured["engine_factory"].keywords["max_model_len"] == 512


def test_the_stall_timeout_comes_from_the_flag_else_the_setting(captured, settings):
    call_command("inference_worker", "--model", "tiny")
    assert captured["stall_timeout_s"] == 120.0
    settings.INFERENCE_STALL_TIMEOUT_S = 30.0
    call_command("inference_worker", "--model", "tiny")
    assert captured["stall_timeout_s"] == 30.0
    call_command("inference_worker", "--model", "tiny", "--stall-timeout", "0")
    assert captured["stall_timeout_s"] == 0.0  # never


def test_wide_steps_come_from_the_flag_else_the_setting_and_reach_the_engine(captured, settings, tiny_model_path):
    call_command("inference_worker", "--model", "tiny")
    assert captured["engine_factory"].keywords["wide_steps"] == "auto"
    settings.INFERENCE_WIDE_STEPS = "off"
    call_command("inference_worker", "--model", "tiny")
    assert captured["engine_factory"].keywords["wide_steps"] == "off"
    call_command("inference_worker", "--model", "tiny", "--wide-steps", "float32")
    assert captured["engine_factory"].keywords["wide_steps"] == "float32"
    engine = worker.load_engine(tiny_model_path, "cpu", 16 << 20, dtype="bfloat16", wide_steps="float32",
                                compile_in_background=False, enforce_eager=True)
    assert engine.config.wide_steps == "float32" and engine.runner.decoder.wide_above == 16
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("inference_worker", "--model", "tiny", "--wide-steps", "fp64")
