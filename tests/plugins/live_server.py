"""The run's one live server: uvicorn serving config.asgi in a thread of the test process.

live_server_url  the server (session); nothing else needed, e.g. the sessions API.
models_file      a MODELS_FILE listing the tiny models below (session).
server           the same server, answering with those models from then to the end of the run (session).
base_url         `server`, for a test whose rows the server must see (transactional_db).
alice, alice_secret, openai_client, http: an organization with 1 USD of credit, its API key, the OpenAI SDK
and an httpx client on the server. Folders that call the SDK `client` say so in their conftest (Django's
test client keeps that name elsewhere).
"""
import json
import shutil
import socket
import threading

import pytest

from tests.poll import wait_until

TINY = "tiny-chat"
TINY_GREEDY = "tiny-chat-greedy"  # the same weights, with greedy decoding as its generation_config default
TINY_HERMES = "tiny-hermes"  # a template that renders tools and calls them with <tool_call> tags (Qwen style)
TINY_LLAMA3 = "tiny-llama3"  # a template that calls tools with bare JSON (Llama 3.1 style)
# 1 micro-USD per prompt token, 2 per completion token: charges are easy to check by hand.
TINY_PRICE = {"input_usd_per_mtok": "1", "output_usd_per_mtok": "2"}


def tiny_cost(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
    """A tiny model's charge: 1 micro-USD an uncached prompt token, 0.5 a cached one (half), 2 a completion token,
    rounded up once."""
    return -(-(2 * (prompt_tokens - cached_tokens) + cached_tokens + 4 * completion_tokens) // 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server_url():
    import uvicorn

    from config.asgi import application

    config = uvicorn.Config(application, host="127.0.0.1", port=_free_port(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started():
        if not thread.is_alive():
            raise RuntimeError("the live test server stopped while starting")
        return server.started

    wait_until(started, timeout=30, message="the live test server to start")
    yield f"http://127.0.0.1:{config.port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def models_file(tiny_model_path, tmp_path_factory):
    from inference.engine.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("models")
    greedy = folder / "greedy"
    shutil.copytree(tiny_model_path, greedy)
    config = json.loads((greedy / "generation_config.json").read_text())
    (greedy / "generation_config.json").write_text(json.dumps({**config, "do_sample": True, "temperature": 0.0}))
    hermes = build_tiny_model(folder / "hermes", chat_template="hermes")
    llama3 = build_tiny_model(folder / "llama3", chat_template="llama3")
    path = folder / "models.json"
    path.write_text(json.dumps({
        TINY: {"path": str(tiny_model_path), **TINY_PRICE},
        TINY_GREEDY: {"path": str(greedy), **TINY_PRICE},
        TINY_HERMES: {"path": str(hermes), **TINY_PRICE},
        TINY_LLAMA3: {"path": str(llama3), **TINY_PRICE},
    }))
    return str(path)


def _forget_models():
    from core import catalogue

    catalogue._catalogue.cache_clear()


@pytest.fixture(scope="session")
def server(live_server_url, models_file):
    """The live server with MODELS_FILE set to the tiny models until the run ends, then put back.

    Session fixtures are set up before a test's function-scoped ones, so this override sits under any the
    test makes with pytest-django's `settings` and outlives them."""
    from django.test import override_settings

    with override_settings(MODELS_FILE=models_file):
        _forget_models()
        yield live_server_url
    _forget_models()


@pytest.fixture
def base_url(server, transactional_db):
    return server


@pytest.fixture
def alice(transactional_db):
    from tests.factories import make_org

    return make_org("alice", credit_micro=1_000_000)


@pytest.fixture
def alice_secret(alice):
    from tests.factories import make_key

    return make_key(alice)[1]


@pytest.fixture
def openai_client(base_url, alice_secret):
    """The official OpenAI SDK, with nothing changed but the base URL and the key."""
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=alice_secret, max_retries=0)


@pytest.fixture
def http(base_url):
    import httpx

    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c
