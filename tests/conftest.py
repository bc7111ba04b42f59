import pytest

# Fixtures shared across folders, each registered once per run: a session fixture imported into a test module
# or another conftest would be registered (and started) once more per import.
pytest_plugins = [
    "tests.plugins.live_server",  # the live server, the tiny models it serves, the OpenAI SDK on it
    "tests.plugins.redis_server",  # a redis-server
    "tests.plugins.fake_stripe",  # a fake Stripe API
]


def pytest_configure(config):
    try:
        from django.conf import settings
    except ImportError:  # a GPU host running only the engine's tests (bench/gpu.sh) has no Django
        return
    if not config.pluginmanager.hasplugin("django"):  # or has it, and runs them with -p no:django
        return

    # The live servers of the tests import config.asgi: no background periodic jobs there; the tests
    # run those jobs themselves when they mean to.
    settings.PERIODIC_IN_PROCESS = False
    # Nor a warm start: it would load the default model from var/models into every test run's live server. The
    # warm start's tests start their own server processes with it on (tests/config/test_warm_start.py).
    settings.INFERENCE_WARM_START = False
    # Argon2 is deliberately slow; tests log in hundreds of times. The one test about how passwords are
    # stored puts the project's hashers back.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The tests speak plain http on loopback, also where DATABASE_URL (the PostgreSQL pass) turns https-only on.
    settings.SECURE_SSL_REDIRECT = settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.SECURE_HSTS_SECONDS = 0
    # The tiny model's answers are compared across requests run in different batches: float32 keeps each
    # answer independent of its neighbours (bf16 and int8 kernels round differently by batch size).
    settings.INFERENCE_DTYPE = "float32"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A tiny random ChatML model directory, built once per test session (offline, ~1 s)."""
    # Imported here so suites that never use the model don't pay for torch.
    from inference.engine.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


def pytest_terminal_summary(terminalreporter):
    """How many generated requests the fuzzers sent, per surface (tests/fuzzing.py), when any ran."""
    import sys

    fuzzing = sys.modules.get("tests.fuzzing")
    if fuzzing is not None and fuzzing.SENT:
        terminalreporter.write_line(fuzzing.report())


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """No test leaves torch on another thread count (an engine not shut down while a background compile runs keeps
    one thread fewer): later tests would run slower, and compile graphs that no other process finds cached."""
    import sys

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        after = torch.get_num_threads()
        torch.set_num_threads(before)
        pytest.fail(f"the test left torch on {after} threads instead of {before}")
