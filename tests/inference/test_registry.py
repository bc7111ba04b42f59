"""Model prices from the catalogue: the built-in default and MODELS_FILE entries, with their cached input price."""
import json

import pytest
from django.core.exceptions import ImproperlyConfigured

from billing.models import ModelPrice
from billing.services import price_get
from core.catalogue import DEFAULT_MODEL_ID, _builtin, _from_file
from core.money import Price

pytestmark = pytest.mark.money


def models_file(tmp_path, **prices) -> str:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"m": {"path": str(tmp_path), "input_usd_per_mtok": "0.3",
                                      "output_usd_per_mtok": "0.6", **prices}}))
    return str(path)


def test_the_default_model_charges_cached_prompt_tokens_half_its_input_price():
    assert _builtin()[DEFAULT_MODEL_ID].default_price == Price(100_000, 200_000, 50_000)


def test_a_models_file_entry_may_give_its_cached_input_price(tmp_path):
    spec = _from_file(models_file(tmp_path, cached_input_usd_per_mtok="0.03"))["m"]
    assert spec.default_price == Price(300_000, 600_000, 30_000)
    assert _from_file(models_file(tmp_path))["m"].default_price.cached_input_micro_per_mtok == 150_000


@pytest.mark.parametrize("cached", ["0.31", "-0.01", "0.0000001", "cheap"])
def test_a_cached_input_price_above_the_input_price_or_not_an_amount_is_refused(tmp_path, cached):
    with pytest.raises(ImproperlyConfigured, match="MODELS_FILE"):
        _from_file(models_file(tmp_path, cached_input_usd_per_mtok=cached))


@pytest.mark.django_db
def test_the_price_row_keeps_a_default_cached_price_as_blank_and_a_given_one_as_given():
    assert price_get(model_id="half", default=Price(300_000, 600_000)) == Price(300_000, 600_000, 150_000)
    assert ModelPrice.objects.get(model_id="half").cached_input_micro_per_mtok is None
    assert price_get(model_id="given", default=Price(300_000, 600_000, 30_000)) == Price(300_000, 600_000, 30_000)
    assert ModelPrice.objects.get(model_id="given").cached_input_micro_per_mtok == 30_000


def test_a_models_file_entry_may_choose_its_precision_over_the_settings(tmp_path, settings):
    settings.INFERENCE_DTYPE, settings.INFERENCE_QUANTIZATION = "float32", "none"
    spec = _from_file(models_file(tmp_path, dtype="bfloat16", quantization="int8"))["m"]
    assert (spec.engine_options()["dtype"], spec.engine_options()["quantization"]) == ("bfloat16", "int8")
    plain = _from_file(models_file(tmp_path))["m"]
    assert (plain.engine_options()["dtype"], plain.engine_options()["quantization"]) == ("float32", "none")


@pytest.mark.parametrize("entry", [{"dtype": "fp8"}, {"quantization": "int2"}])
def test_an_unknown_precision_in_the_models_file_is_refused(tmp_path, entry):
    with pytest.raises(ImproperlyConfigured, match="MODELS_FILE"):
        _from_file(models_file(tmp_path, **entry))


def test_a_models_file_entry_may_shorten_its_context_window_over_the_setting(tmp_path, settings):
    settings.INFERENCE_MAX_MODEL_LEN = 0  # each model's own window
    assert _from_file(models_file(tmp_path))["m"].context_limit is None
    assert _from_file(models_file(tmp_path, max_model_len=1024))["m"].context_limit == 1024
    settings.INFERENCE_MAX_MODEL_LEN = 4096
    assert _from_file(models_file(tmp_path))["m"].context_limit == 4096
    assert _from_file(models_file(tmp_path, max_model_len=1024))["m"].context_limit == 1024


@pytest.mark.parametrize("window", [0, -5, "4096", 2.5, True])
def test_a_context_window_that_is_not_a_positive_integer_is_refused(tmp_path, window):
    with pytest.raises(ImproperlyConfigured, match="max_model_len"):
        _from_file(models_file(tmp_path, max_model_len=window))


@pytest.mark.parametrize("config, limit, declared", [
    ({"max_position_embeddings": 8192}, None, 8192),
    ({"max_position_embeddings": 8192}, 1024, 1024),
    ({"text_config": {"max_position_embeddings": 4096}}, None, 4096),  # a multimodal checkpoint's text model
    ({"max_position_embeddings": "long"}, None, None),
    ({}, 1024, 1024),
    (None, None, None),  # no config.json
])
def test_a_models_window_is_known_before_its_engine_loads(tmp_path, settings, config, limit, declared):
    """What GET /v1/models reports for a model no engine has loaded yet."""
    settings.INFERENCE_MAX_MODEL_LEN = 0
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    entry = {"max_model_len": limit} if limit else {}
    assert _from_file(models_file(tmp_path, **entry))["m"].declared_window == declared
