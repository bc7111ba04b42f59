import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_choice, env_float, env_int, env_list

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw, expected", [("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False)])
def test_booleans_accept_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env_bool("X_FLAG", not expected) is expected


def test_a_malformed_boolean_stops_start_up(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        env_bool("X_FLAG", False)


def test_integers_are_checked(monkeypatch):
    monkeypatch.setenv("X_N", "12")
    assert env_int("X_N", 1) == 12
    monkeypatch.setenv("X_N", "twelve")
    with pytest.raises(ImproperlyConfigured, match="X_N"):
        env_int("X_N", 1)
    monkeypatch.setenv("X_N", "-1")
    with pytest.raises(ImproperlyConfigured, match="minimum"):
        env_int("X_N", 1, minimum=0)


def test_unset_values_take_the_default(monkeypatch):
    monkeypatch.delenv("X_LIST", raising=False)
    assert env_list("X_LIST", ["a"]) == ["a"]
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_list("X_LIST", []) == ["a", "b", "c"]


def load_settings(tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DEBUG")}
    clean.update(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings", **env)
    code = "import django; django.setup(); from django.conf import settings; print(settings.DATABASES['default']['ENGINE'], settings.DEBUG)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_the_embedded_default_needs_no_configuration(tmp_path):
    result = load_settings(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "False"]
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_a_secret_key_is_required_outside_the_embedded_default(tmp_path):
    result = load_settings(tmp_path, DATABASE_URL="postgresql://u@127.0.0.1:1/db")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_database_url_selects_postgresql(tmp_path):
    result = load_settings(tmp_path, DATABASE_URL="postgresql://u@127.0.0.1:1/db", SECRET_KEY="x" * 50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "django.db.backends.postgresql"


def test_a_malformed_debug_value_stops_start_up(tmp_path):
    result = load_settings(tmp_path, DEBUG="sure")
    assert result.returncode != 0 and "DEBUG='sure'" in result.stderr


def test_choices_and_numbers_in_ranges_are_checked(monkeypatch):
    monkeypatch.setenv("X_KIND", "int4")
    assert env_choice("X_KIND", "auto", ("auto", "int4")) == "int4"
    monkeypatch.setenv("X_KIND", "int3")
    with pytest.raises(ImproperlyConfigured, match="X_KIND='int3' is not one of auto, int4"):
        env_choice("X_KIND", "auto", ("auto", "int4"))
    monkeypatch.setenv("X_SHARE", "0.5")
    assert env_float("X_SHARE", 0.9, minimum=0.05, maximum=1.0) == 0.5
    for bad in ("1.5", "half"):
        monkeypatch.setenv("X_SHARE", bad)
        with pytest.raises(ImproperlyConfigured, match="X_SHARE"):
            env_float("X_SHARE", 0.9, minimum=0.05, maximum=1.0)


def test_a_misspelt_inference_precision_stops_start_up(tmp_path):
    result = load_settings(tmp_path, INFERENCE_DTYPE="bf16x")
    assert result.returncode != 0 and "INFERENCE_DTYPE='bf16x'" in result.stderr
