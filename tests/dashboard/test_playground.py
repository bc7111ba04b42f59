"""The playground: the page, and chat over its WebSocket (the live uvicorn server) billed like any request."""
import json
import math
import time

import pytest
from django.test import Client
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from accounts.models import ChatMessage, ChatSession, Membership, User
from accounts.sessions import session_history
from billing.models import Hold, UsageRecord
from billing.selectors import ledger_sum_micro
from tests.api.conftest import TINY, TINY_GREEDY, tiny_cost, wait_for_usage
from tests.factories import make_org

pytestmark = [pytest.mark.money, pytest.mark.usefixtures("tiny_models")]  # tests/dashboard/conftest.py

WAIT = 60  # seconds: the first turn of a test run loads the tiny model
HI = [{"role": "user", "content": "Hello there, how are you?"}]


def member(email: str, org, role=Membership.Role.MEMBER) -> User:
    user = User.objects.create_user(email=email, password="a long passphrase 42")
    Membership.objects.create(user=user, organization=org, role=role)
    return user


def cookie_of(user: User, organization=None) -> str:
    client = Client()
    client.force_login(user)
    if organization is not None:
        session = client.session
        session["organization_id"] = organization.pk
        session.save()
    return client.cookies["sessionid"].value


class Page:
    """The playground's socket as the page opens it: the session cookie, the site's own Origin."""

    def __init__(self, base_url: str, cookie: str | None, origin: str | None = None):
        headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
        self._connection = connect(base_url.replace("http", "ws", 1) + "/ws/playground/", origin=origin or base_url,
                                   additional_headers=headers, open_timeout=WAIT, proxy=None)
        self.ws = self._connection.__enter__()

    def receive(self) -> dict:
        return json.loads(self.ws.recv(timeout=WAIT))

    def send(self, message: dict) -> None:
        self.ws.send(json.dumps(message))

    def ready(self) -> dict:
        message = self.receive()
        assert message["type"] == "ready", message
        return message

    def turn(self, **chat) -> tuple[str, list[dict]]:
        """Send one chat message; (the streamed text, every message up to the turn's done or error)."""
        self.send({"type": "chat", "model": TINY, "messages": HI, "max_tokens": 8, **chat})
        received = []
        while not received or received[-1]["type"] not in ("done", "error"):
            received.append(self.receive())
        return "".join(m["text"] for m in received if m["type"] == "delta"), received

    def closed(self):
        """The close frame the server sent."""
        with pytest.raises(ConnectionClosed) as closed:
            self.ws.recv(timeout=WAIT)
        return closed.value.rcvd

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


def balance_of(org):
    account = org.credit_account
    account.refresh_from_db()
    return account


def usage_of(request_id: str) -> UsageRecord:
    return wait_for_usage(request_id, timeout=WAIT)


# -- the page --------------------------------------------------------------------------------------------------


def test_the_page_offers_the_prepared_models_and_the_controls(transactional_db):
    org = make_org("alice", credit_micro=1_000_000)
    client = Client()
    client.force_login(member("ann@example.com", org))
    page = client.get("/playground/")
    assert page.status_code == 200
    html = page.content.decode()
    for element_id in ("pg-model", "pg-system", "pg-temperature", "pg-max-tokens", "pg-message", "pg-send",
                       "pg-stop", "pg-transcript", "pg-save", "pg-session-link", "pg-error"):
        assert f'id="{element_id}"' in html
    assert f'<option value="{TINY}"' in html and f'<option value="{TINY_GREEDY}"' in html
    assert 'data-ws-path="/ws/playground/"' in html
    assert "1.000000" in html  # the organization's available credit, in USD
    assert "1.00 USD per 1M prompt tokens, 2.00 per 1M completion tokens" in html  # the tiny models' price
    assert "playground/playground.js" in html


def test_the_page_asks_strangers_to_sign_in(transactional_db):
    response = Client().get("/playground/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# -- who may chat ----------------------------------------------------------------------------------------------


def test_a_visitor_who_is_not_signed_in_is_closed_with_4401(base_url):
    page = Page(base_url, None)
    assert page.receive()["error"]["code"] == "not_signed_in"
    closed = page.closed()
    assert closed.code == 4401 and "Sign in" in closed.reason


def test_a_user_without_an_organization_is_closed_with_4403(base_url):
    user = User.objects.create_user(email="solo@example.com", password="a long passphrase 42")
    page = Page(base_url, cookie_of(user))
    assert page.receive()["error"]["code"] == "not_a_member"
    assert page.closed().code == 4403


def test_a_page_of_another_site_cannot_open_the_socket(base_url):
    org = make_org("alice", credit_micro=1_000_000)
    with pytest.raises(InvalidStatus) as refused:
        Page(base_url, cookie_of(member("ann@example.com", org)), origin="http://evil.example")
    assert refused.value.response.status_code == 403


# -- turns, billed like any request ----------------------------------------------------------------------------


@pytest.fixture
def alice(base_url):
    return make_org("alice", credit_micro=1_000_000)


@pytest.fixture
def page(base_url, alice):
    page = Page(base_url, cookie_of(member("ann@example.com", alice)))
    page.ready()
    yield page
    page.close()


def test_an_answer_streams_and_the_organization_pays_exactly_its_usage(alice, page):
    text, received = page.turn(temperature=0)
    kinds = [m["type"] for m in received]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("delta") >= 2
    done = received[-1]
    record = UsageRecord.objects.get(request_id=done["request_id"])
    assert record.organization_id == alice.pk and record.api_key_id is None
    assert done["usage"]["completion_tokens"] == record.completion_tokens == 8
    assert done["usage"]["prompt_tokens"] == record.prompt_tokens
    assert done["usage"]["prompt_tokens_details"] == {"cached_tokens": record.cached_tokens}
    assert done["cost_micro"] == record.cost_micro == tiny_cost(record.prompt_tokens, record.completion_tokens,
                                                                record.cached_tokens)
    assert done["cost_usd"] == f"0.{record.cost_micro:06d}"
    assert text
    account = balance_of(alice)
    assert account.balance_micro == 1_000_000 - record.cost_micro and account.held_micro == 0
    assert done["available_usd"] == f"0.{account.balance_micro:06d}"
    assert ledger_sum_micro(account=account) == account.balance_micro
    hold = Hold.objects.get(request_id=done["request_id"])
    assert hold.api_key_id is None and hold.status == Hold.Status.SETTLED


def test_each_turn_sends_the_whole_conversation(page):
    first_text, first = page.turn(model=TINY_GREEDY)
    history = [{"role": "system", "content": "Be brief."}, *HI, {"role": "assistant", "content": first_text},
               {"role": "user", "content": "And then?"}]
    _, second = page.turn(model=TINY_GREEDY, messages=history)
    assert second[-1]["type"] == "done"
    assert second[-1]["usage"]["prompt_tokens"] > first[-1]["usage"]["prompt_tokens"] + 5


def test_stop_ends_the_answer_and_charges_only_what_was_generated(alice, page):
    page.send({"type": "chat", "model": TINY, "messages": HI, "max_tokens": 1500, "temperature": 0})
    deltas = 0
    while deltas < 3:
        deltas += page.receive()["type"] == "delta"
    page.send({"type": "stop"})
    message = {"type": "delta"}
    while message["type"] == "delta":
        message = page.receive()
    assert message["type"] == "done" and message["finish_reason"] == "cancelled"
    record = UsageRecord.objects.get(request_id=message["request_id"])
    assert record.status == "cancelled"
    assert 3 <= record.completion_tokens < 1500 and message["usage"]["completion_tokens"] == record.completion_tokens
    assert record.cost_micro == tiny_cost(record.prompt_tokens, record.completion_tokens, record.cached_tokens)
    assert record.cost_micro == message["cost_micro"]
    account = balance_of(alice)
    assert account.balance_micro == 1_000_000 - record.cost_micro and account.held_micro == 0
    assert ledger_sum_micro(account=account) == account.balance_micro


def test_closing_the_page_mid_answer_still_settles_the_turn(alice, page):
    page.send({"type": "chat", "model": TINY, "messages": HI, "max_tokens": 1500})
    start = page.receive()
    page.receive()  # the first piece of the answer
    page.close()
    record = usage_of(start["request_id"])
    assert record.status == "cancelled" and record.completion_tokens < 1500
    account = balance_of(alice)
    assert account.balance_micro == 1_000_000 - record.cost_micro and account.held_micro == 0
    assert ledger_sum_micro(account=account) == account.balance_micro


# -- refusals: what the page shows, and nothing charged ----------------------------------------------------------


@pytest.mark.parametrize("chat, status, param, code", [
    ({"temperature": 3}, 400, "temperature", None),
    ({"max_tokens": 0}, 400, "max_tokens", None),
    ({"messages": [{"role": "user"}]}, 400, "messages[0].content", None),
    ({"n": 2}, 400, "n", "unknown_parameter"),
    ({"model": "no-such-model"}, 404, "model", "model_not_found"),
    ({"max_tokens": 100_000}, 400, "messages", "context_length_exceeded"),
])
def test_bad_input_is_an_error_naming_its_parameter(alice, page, chat, status, param, code):
    _, received = page.turn(**chat)
    assert [m["type"] for m in received] == ["error"]
    error = received[0]["error"]
    assert (error["status"], error["param"]) == (status, param) and error["message"]
    if code:
        assert error["code"] == code
    assert not Hold.objects.exists()
    assert balance_of(alice).balance_micro == 1_000_000


def test_an_organization_without_enough_credit_gets_the_402_message(base_url):
    org = make_org("poor", credit_micro=10)
    page = Page(base_url, cookie_of(member("pat@example.com", org)))
    page.ready()
    _, received = page.turn()
    page.close()
    error = received[-1]["error"]
    assert error["status"] == 402 and error["code"] == "insufficient_credit"
    assert "Insufficient credit" in error["message"] and "0.000010 USD is available" in error["message"]
    assert balance_of(org).balance_micro == 10 and not Hold.objects.exists()


def test_the_organizations_rate_limit_applies(alice, page):
    from core import clock

    clock.freeze(math.floor(time.time() / 60) * 60 + 1)  # both turns in one minute's window, 59 s left of it
    try:
        alice.rate_limit_rpm = 1
        alice.save(update_fields=["rate_limit_rpm"])
        assert page.turn()[1][-1]["type"] == "done"
        _, received = page.turn()
    finally:
        clock.thaw()
    error = received[-1]["error"]
    assert error["status"] == 429 and error["code"] == "rate_limit_exceeded"
    assert "organization" in error["message"] and 1 <= error["retry_after"] <= 61
    assert error["retry_after"] == 59


def test_one_answer_at_a_time_and_unknown_messages_are_explained(page):
    page.ws.send("not json")
    assert page.receive()["error"]["code"] == "invalid_message"
    page.send({"type": "chat", "model": TINY, "messages": HI, "max_tokens": 1500})
    page.send({"type": "chat", "model": TINY, "messages": HI, "max_tokens": 2})
    seen = []
    while "turn_in_progress" not in json.dumps(seen):
        seen.append(page.receive())
    page.send({"type": "stop"})
    while seen[-1]["type"] != "done":
        seen.append(page.receive())
    assert [m["type"] for m in seen].count("start") == 1


# -- the organization current in the session -------------------------------------------------------------------


def test_the_turn_spends_the_credit_of_the_organization_current_in_the_session(base_url):
    alice, bob = make_org("alice", credit_micro=1_000_000), make_org("bob", credit_micro=1_000_000)
    carol = make_org("carol", credit_micro=1_000_000)
    user = member("ann@example.com", alice)
    Membership.objects.create(user=user, organization=bob, role=Membership.Role.MEMBER)
    page = Page(base_url, cookie_of(user, bob))
    assert page.ready()["organization"] == "bob"
    done = page.turn()[1][-1]
    page.close()
    assert balance_of(bob).balance_micro == 1_000_000 - done["cost_micro"]
    assert balance_of(alice).balance_micro == 1_000_000
    # A session naming an organization the user does not belong to falls back to one of theirs.
    page = Page(base_url, cookie_of(user, carol))
    assert page.ready()["organization"] == "alice"
    page.close()
    assert balance_of(carol).balance_micro == 1_000_000


def test_a_member_removed_while_connected_can_chat_no_more(alice, page):
    Membership.objects.filter(organization=alice).delete()
    _, received = page.turn()
    assert received[-1]["error"]["code"] == "not_a_member"
    assert page.closed().code == 4403
    assert not Hold.objects.exists()


# -- save as session -------------------------------------------------------------------------------------------


def test_save_as_session_stores_the_conversation_for_the_organization(alice, page):
    text, _ = page.turn()
    conversation = [{"role": "system", "content": "Be brief."}, *HI, {"role": "assistant", "content": text}]
    page.send({"type": "save", "model": TINY, "messages": conversation})
    saved = page.receive()
    page.send({"type": "save", "model": TINY, "messages": HI})
    refused = page.receive()
    assert saved["type"] == "saved" and saved["url"] == f"/sessions/{saved['session_id']}/"
    session = ChatSession.objects.get(pk=saved["session_id"])
    assert session.organization_id == alice.pk and session.api_key_id is None and session.model == TINY
    assert saved["title"] == session.title == HI[0]["content"]
    assert session_history(session) == conversation
    assert refused["type"] == "error" and refused["error"]["code"] == "empty_conversation"
    assert ChatMessage.objects.count() == 3


def test_a_conversation_holding_nul_characters_is_saved_as_it_is(alice, page):
    # A byte-level model may generate U+0000 (PostgreSQL's text refuses it as it is).
    conversation = [*HI, {"role": "assistant", "content": "odd\x00bytes"}, {"role": "user", "content": "\x00?"}]
    page.send({"type": "save", "model": TINY, "messages": conversation})
    saved = page.receive()
    assert saved["type"] == "saved", saved
    assert session_history(ChatSession.objects.get(pk=saved["session_id"])) == conversation


def test_a_fault_of_the_servers_in_a_save_is_said_and_the_page_stays_connected(alice, page, monkeypatch):
    def broken(organization, content):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("inference.web.consumer.save_conversation", broken)
    page.send({"type": "save", "model": TINY, "messages": HI})
    failed = page.receive()
    assert failed["type"] == "error" and failed["action"] == "save", failed
    assert failed["error"]["code"] == "server_error" and "disk on fire" not in json.dumps(failed)
    monkeypatch.undo()
    page.send({"type": "save", "model": TINY, "messages": [*HI, {"role": "assistant", "content": "Fine."}]})
    assert page.receive()["type"] == "saved"
