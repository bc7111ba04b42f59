"""The playground's socket within bounds: this site's pages only, signed-in sessions only, and what it may send
and save limited (message, session, storage quota, saves per minute). All against the live uvicorn server."""
import math
import time

import pytest
from django.test import Client
from websockets.exceptions import InvalidStatus

from accounts.models import ChatSession, Membership
from billing.models import Hold
from core import clock
from tests.api.conftest import TINY
from tests.dashboard.test_playground import HI, Page, cookie_of, member
from tests.factories import make_org

pytestmark = [pytest.mark.money, pytest.mark.usefixtures("tiny_models")]  # tests/dashboard/conftest.py


@pytest.fixture
def alice(base_url):
    return make_org("alice", credit_micro=1_000_000)


@pytest.fixture
def ann(alice):
    return member("ann@example.com", alice, Membership.Role.OWNER)


@pytest.fixture
def page(base_url, ann):
    page = Page(base_url, cookie_of(ann))
    page.ready()
    yield page
    page.close()


def conversation(*contents: str) -> list[dict]:
    """A user message, then alternating answers and questions with these contents."""
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": content} for i, content in enumerate(contents)]


def save(page: Page, messages: list[dict]) -> dict:
    page.send({"type": "save", "model": TINY, "messages": messages})
    return page.receive()


# -- whose pages may open the socket ---------------------------------------------------------------------------


def other_origins(base_url: str) -> list[str]:
    port = int(base_url.rsplit(":", 1)[1])
    return [
        f"http://127.0.0.1:{port + 1}",  # another port of this host
        f"https://127.0.0.1:{port}",  # another scheme
        "https://127.0.0.1",
        f"http://localhost:{port}",  # another name for this machine: another site to the browser
        f"http://127.0.0.1:{port}.evil.example",
        "null",
    ]


def test_only_a_page_of_exactly_this_origin_opens_the_socket(base_url, ann):
    cookie = cookie_of(ann)
    for origin in other_origins(base_url):
        with pytest.raises(InvalidStatus) as refused:
            Page(base_url, cookie, origin=origin)
        assert refused.value.response.status_code == 403, origin
    page = Page(base_url, cookie, origin=base_url)
    assert page.ready()["organization"] == "alice"
    page.close()


def test_a_handshake_without_origin_is_refused(base_url, ann):
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect(base_url.replace("http", "ws", 1) + "/ws/playground/", origin=None, proxy=None,
                additional_headers={"Cookie": f"sessionid={cookie_of(ann)}"})
    assert refused.value.response.status_code == 403


def test_an_origin_listed_in_csrf_trusted_origins_opens_the_socket(base_url, ann, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com"]
    page = Page(base_url, cookie_of(ann), origin="https://chat.example.com")
    assert page.ready()["type"] == "ready"
    page.close()
    with pytest.raises(InvalidStatus):
        Page(base_url, cookie_of(ann), origin="https://chat.example.com:8443")


# -- signing out -----------------------------------------------------------------------------------------------


def sign_out(cookie: str) -> None:
    client = Client()
    client.cookies["sessionid"] = cookie
    assert client.post("/accounts/logout/").status_code == 302


@pytest.mark.parametrize("message", [
    {"type": "chat", "model": TINY, "messages": HI, "max_tokens": 4},
    {"type": "save", "model": TINY, "messages": conversation("Hi", "Hello!")},
])
def test_a_socket_opened_before_signing_out_chats_and_saves_no_more(base_url, ann, message):
    cookie = cookie_of(ann)
    page = Page(base_url, cookie)
    page.ready()
    sign_out(cookie)
    page.send(message)
    error = page.receive()["error"]
    closed = page.closed()
    assert error["code"] == "signed_out" and error["status"] == 401
    assert closed.code == 4401 and "signed out" in closed.reason
    assert not Hold.objects.exists() and not ChatSession.objects.exists()


# -- sizes -----------------------------------------------------------------------------------------------------


def test_a_message_larger_than_the_socket_limit_is_refused_unread(page, settings):
    limit = settings.PLAYGROUND_WS_MAX_BYTES
    assert limit == 2 << 20  # the default, also uvicorn's --ws-max-size in the Makefile and the Procfile
    page.send({"type": "save", "model": TINY, "messages": conversation("x" * limit, "y")})
    error = page.receive()
    assert error["action"] == "message" and error["error"]["code"] == "message_too_large"
    assert error["error"]["status"] == 413 and error["error"]["param"] == "message"
    assert f"at most {limit} bytes" in error["error"]["message"] and "PLAYGROUND_WS_MAX_BYTES" in error["error"]["message"]
    assert not ChatSession.objects.exists()
    assert save(page, conversation("Hi", "Hello!"))["type"] == "saved"  # the socket still works


def test_a_message_larger_than_a_session_may_keep_is_not_saved(page, settings):
    limit = settings.CHAT_SESSION_MESSAGE_MAX_BYTES
    error = save(page, conversation("Hi", "Hello!", "é" * (limit // 2), "ok"))["error"]
    assert (error["status"], error["code"], error["param"]) == (413, "message_too_large", "messages[2]")
    assert "256.0 KiB" in error["message"] and "CHAT_SESSION_MESSAGE_MAX_BYTES" in error["message"]
    assert not ChatSession.objects.exists()


def test_a_conversation_larger_than_a_session_may_be_is_not_saved(page, settings):
    part = "z" * (settings.CHAT_SESSION_MESSAGE_MAX_BYTES - 100)
    error = save(page, conversation(part, part, part, part, part))["error"]
    assert (error["status"], error["code"]) == (413, "session_too_large")
    assert "1.0 MiB" in error["message"] and "CHAT_SESSION_MAX_BYTES" in error["message"]
    assert not ChatSession.objects.exists()


def test_the_organizations_storage_quota_bounds_what_it_saves(page, alice, ann):
    first = save(page, conversation("Hi", "Hello!" * 50))
    held = ChatSession.objects.get(pk=first["session_id"]).size_bytes
    assert held > 300
    alice.session_storage_quota_bytes = held + 100
    alice.save(update_fields=["session_storage_quota_bytes"])
    error = save(page, conversation("Again", "Hello!" * 50))["error"]
    assert (error["status"], error["code"]) == (403, "storage_quota_exceeded")
    assert "storage quota" in error["message"] and "Delete sessions" in error["message"]
    assert ChatSession.objects.count() == 1
    dashboard = Client()
    dashboard.force_login(ann)
    listing = dashboard.get("/sessions/").content.decode()
    assert f"Storage: {held}\xa0bytes of {held + 100}\xa0bytes" in listing
    dashboard.post(f"/sessions/{first['session_id']}/delete/")
    assert save(page, conversation("Again", "Hello!" * 50))["type"] == "saved"  # room again


def test_saves_per_minute_are_limited_per_organization(page, settings):
    settings.PLAYGROUND_SAVES_PER_MINUTE = 2
    clock.freeze(math.floor(time.time() / 60) * 60 + 1)  # one minute's window, 59 s left of it
    try:
        assert [save(page, conversation("Hi", "Hello!"))["type"] for _ in range(2)] == ["saved", "saved"]
        refused = save(page, conversation("Hi", "Hello!"))
        clock.advance(60)
        again = save(page, conversation("Hi", "Hello!"))
    finally:
        clock.thaw()
    error = refused["error"]
    assert refused["action"] == "save" and (error["status"], error["code"]) == (429, "rate_limit_exceeded")
    assert error["retry_after"] == 59 and "PLAYGROUND_SAVES_PER_MINUTE" in error["message"]
    assert again["type"] == "saved"
    assert ChatSession.objects.count() == 3
