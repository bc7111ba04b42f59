"""The chat lifecycle's one guard (inference.chat.lifecycle): whatever fails between the hold and the queue, the
client gets an error, the hold is released in full, the admitted tokens are given back, and a session opened for
the request is dropped."""
import pytest

from accounts import sessions
from accounts.models import ChatSession
from billing.models import CreditAccount, Hold, LedgerEntry
from inference.availability import NoCapacity
from inference.chat import lifecycle
from inference.dispatch import get_backend
from tests.api.conftest import TINY

pytestmark = pytest.mark.money

BODY = {"model": TINY, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "temperature": 0}


class RefusingQueue:
    """The server's backend, except that nothing can be queued: as if the last worker went away after the check."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    async def enqueue(self, spec, request):
        raise NoCapacity("No inference worker is serving this model right now.", code="no_worker", retry_after=5)


@pytest.fixture
def sessions_on(alice):
    alice.auto_create_sessions = True
    alice.save(update_fields=["auto_create_sessions"])
    return alice


def _money(org):
    account = CreditAccount.objects.get(organization=org)
    return account.balance_micro, account.held_micro, LedgerEntry.objects.filter(account=account).count()


def _tokens_left(response) -> int:
    return int(response.headers["x-ratelimit-remaining-tokens"])


def test_a_failed_session_start_releases_the_hold_and_gives_the_tokens_back(http, sessions_on, alice_secret,
                                                                           monkeypatch):
    headers = {"Authorization": f"Bearer {alice_secret}"}
    before = _money(sessions_on)

    def broken(**kwargs):
        raise RuntimeError("the sessions table is unavailable")

    monkeypatch.setattr(sessions, "session_create", broken)
    response = http.post("/v1/chat/completions", headers=headers, json=BODY)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert _money(sessions_on) == before  # nothing charged, nothing held, no ledger row
    assert list(Hold.objects.filter(account__organization=sessions_on).values_list("status", flat=True)) == [
        Hold.Status.RELEASED]  # it was placed, then released in full
    assert not ChatSession.objects.filter(organization=sessions_on).exists()

    monkeypatch.undo()
    ok = http.post("/v1/chat/completions", headers=headers, json={**BODY, "max_tokens": 1})
    assert ok.status_code == 200, ok.text
    # The refused request's tokens were given back: the next one's window holds only its own.
    usage = ok.json()["usage"]
    limit = int(ok.headers["x-ratelimit-limit-tokens"])
    assert limit - _tokens_left(ok) == usage["prompt_tokens"] + usage["completion_tokens"]


def test_a_queue_that_refuses_the_request_drops_the_session_opened_for_it(http, sessions_on, alice_secret,
                                                                          monkeypatch):
    before = _money(sessions_on)
    monkeypatch.setattr(lifecycle, "get_backend", lambda: RefusingQueue(get_backend()))
    response = http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {alice_secret}"}, json=BODY)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "no_worker"
    assert "x-session-id" not in response.headers
    assert _money(sessions_on) == before
    assert list(Hold.objects.filter(account__organization=sessions_on).values_list("status", flat=True)) == [
        Hold.Status.RELEASED]
    assert not ChatSession.objects.filter(organization=sessions_on).exists()


def test_a_session_that_holds_messages_is_never_discarded(sessions_on):
    session = sessions.session_create(organization=sessions_on, api_key=None, model=TINY)
    sessions.session_append(session, [{"role": "user", "content": "kept"}], request_id="chatcmpl-kept")
    sessions.session_discard(session)
    assert ChatSession.objects.filter(pk=session.pk).exists()
