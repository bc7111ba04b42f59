"""A live ASGI server (uvicorn, in a thread of the test process) serving the tiny model."""
import json
import shutil
import socket
import threading
import time

import httpx
import openai
import pytest
import uvicorn
from django.conf import settings

from billing.models import UsageRecord
from tests.factories import make_key, make_org

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


@pytest.fixture(scope="session")
def models_file(tiny_model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    greedy = folder / "greedy"
    shutil.copytree(tiny_model_path, greedy)
    config = json.loads((greedy / "generation_config.json").read_text())
    (greedy / "generation_config.json").write_text(json.dumps({**config, "do_sample": True, "temperature": 0.0}))
    from inference.engine.tiny import build_tiny_model

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(models_file):
    settings.MODELS_FILE = models_file
    from config.asgi import application

    config = uvicorn.Config(application, host="127.0.0.1", port=_free_port(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{config.port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def base_url(server, transactional_db):
    return server


@pytest.fixture
def alice(transactional_db):
    return make_org("alice", credit_micro=1_000_000)


@pytest.fixture
def alice_secret(alice):
    return make_key(alice)[1]


@pytest.fixture
def client(base_url, alice_secret):
    """The official OpenAI SDK, with nothing changed but the base URL and the key."""
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=alice_secret, max_retries=0)


@pytest.fixture
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


def wait_for_usage(request_id: str, timeout: float = 30) -> UsageRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = UsageRecord.objects.filter(request_id=request_id).first()
        if record is not None:
            return record
        time.sleep(0.05)
    raise AssertionError(f"no usage record for {request_id}")


def stream_then_disconnect(base_url: str, secret: str, body: dict, *, events: int = 4) -> str:
    """Start a stream, read `events` SSE events, close the connection; the request id."""
    with httpx.Client(base_url=base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {secret}"}) as response:
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            seen = 0
            for line in response.iter_lines():
                seen += line.startswith("data: ")
                if seen == events:
                    break
    return request_id
