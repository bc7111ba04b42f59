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


def test_compiled_kernels_are_cached_in_the_data_dir_unless_torch_is_told_otherwise(tmp_path):
    code = ("import django; django.setup(); from torch._inductor.runtime.cache_dir_utils import cache_dir; "
            "print(cache_dir())")
    clean = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    for extra, expected in (({}, tmp_path / "compile-cache"), ({"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "mine")},
                                                                 tmp_path / "mine")):
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env={
            **clean, "DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings", **extra})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(expected)  # not /tmp, which a reboot empties


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


PRODUCTION = {"DEBUG": "0", "DATABASE_URL": "postgresql://platform@127.0.0.1:1/platform",
              "SECRET_KEY": "k3-" + "Zq8vN2xLw5Rb7Ty1Hs4Jd6Fg9Km0Pc" * 2, "ALLOWED_HOSTS": "api.example.com",
              "CSRF_TRUSTED_ORIGINS": "https://api.example.com", "SITE_URL": "https://api.example.com"}
DEPLOYMENT_VARIABLES = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DEBUG", "SITE_URL", "ALLOWED_HOSTS",
                        "CSRF_TRUSTED_ORIGINS", "TRUSTED_PROXIES", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE",
                        "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
                        "SECURE_HSTS_PRELOAD")


def manage(tmp_path, *args, **env):
    clean = {k: v for k, v in os.environ.items() if k not in DEPLOYMENT_VARIABLES}
    clean.update(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings", **env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_a_production_environment_passes_the_deployment_checks_without_a_warning(tmp_path):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


SECURITY = ("print(settings.SECURE_SSL_REDIRECT, settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, "
            "settings.SECURE_HSTS_SECONDS)")


@pytest.mark.parametrize("env, expected", [
    ({}, "False False False 0"),  # the embedded default (`make run`): plain http on loopback
    (PRODUCTION, "True True True 31536000"),  # outside it: https only
    ({**PRODUCTION, "DEBUG": "1"}, "False False False 0"),  # DEBUG on: http
    ({**PRODUCTION, "SECURE_SSL_REDIRECT": "0", "SECURE_HSTS_SECONDS": "60"}, "False True True 60"),
    ({"SESSION_COOKIE_SECURE": "1", "CSRF_COOKIE_SECURE": "yes"}, "False True True 0"),
])
def test_https_settings_come_from_the_environment(tmp_path, env, expected):
    result = manage(tmp_path, "shell", "-c", f"from django.conf import settings; {SECURITY}", **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("changes, warning", [
    ({"SITE_URL": "http://api.example.com"}, "accounts.W001"),  # emailed links over http to an https-only site
    ({"SITE_URL": "https://other.example.com"}, "accounts.W002"),  # links to a host this site refuses
    ({"SITE_URL": ""}, "accounts.W002"),  # left at its loopback default
    ({"SECURE_HSTS_SECONDS": "0"}, "security.W004"),
    ({"SESSION_COOKIE_SECURE": "0"}, "security.W012"),
])
def test_the_deployment_checks_name_what_is_missing(tmp_path, changes, warning):
    result = manage(tmp_path, "check", "--deploy", **{**PRODUCTION, **changes})
    assert warning in result.stdout + result.stderr


@pytest.mark.parametrize("value", ["api.example.com", "https://api.example.com/dashboard", "ftp://api.example.com",
                                   "https://api.example.com:99999", "https://user:pw@api.example.com"])
def test_a_malformed_site_url_stops_start_up(tmp_path, value):
    result = load_settings(tmp_path, SITE_URL=value)
    assert result.returncode != 0 and f"SITE_URL={value!r}" in result.stderr
