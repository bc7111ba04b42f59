"""The run's live server (live_server_url, tests/plugins/live_server.py; no model needed), and two tenants
with keys."""
import httpx
import pytest

from tests.factories import make_key, make_org


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
