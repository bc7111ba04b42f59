"""A live uvicorn server of config.asgi (no model needed), and two tenants with keys."""
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from tests.factories import make_key, make_org


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server_url():
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
def http(live_server_url, transactional_db):
    with httpx.Client(base_url=live_server_url, timeout=30) as client:
        yield client


@pytest.fixture
def alice(transactional_db):
    return make_org("alice")


@pytest.fixture
def bob(transactional_db):
    return make_org("bob")


@pytest.fixture
def alice_key(alice):
    return make_key(alice)


@pytest.fixture
def alice_auth(alice_key):
    return {"Authorization": f"Bearer {alice_key[1]}"}


@pytest.fixture
def bob_auth(bob):
    return {"Authorization": f"Bearer {make_key(bob)[1]}"}
