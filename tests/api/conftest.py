"""The API tests: the live server (tests/plugins/live_server.py) and the OpenAI SDK as `client`."""
import httpx
import pytest

from billing.models import UsageRecord
from tests.plugins.live_server import (  # noqa: F401  (names these tests import from here)
    TINY,
    TINY_GREEDY,
    TINY_HERMES,
    TINY_LLAMA3,
    tiny_cost,
)
from tests.poll import wait_until


@pytest.fixture
def client(openai_client):
    """The OpenAI SDK on the live server (Django's test client keeps the name `client` outside these folders)."""
    return openai_client


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    """The tiny models' tokenizer and chat template: the token counts the server should report."""
    from inference.engine.tokenizer import ChatTokenizer

    return ChatTokenizer.from_pretrained(str(tiny_model_path))


def wait_for_usage(request_id: str, timeout: float = 30) -> UsageRecord:
    return wait_until(lambda: UsageRecord.objects.filter(request_id=request_id).first(), timeout=timeout,
                      message=f"the usage record of {request_id}")


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
