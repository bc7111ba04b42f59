import json
from io import StringIO

import pytest
from django.core.management import call_command

from core.catalogue import DEFAULT_MODEL_ID, get_model


@pytest.fixture
def prepared_dir(settings, tmp_path):
    settings.MODEL_CACHE_DIR = tmp_path
    folder = tmp_path / DEFAULT_MODEL_ID
    folder.mkdir()
    (folder / "config.json").write_text("{}")
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
