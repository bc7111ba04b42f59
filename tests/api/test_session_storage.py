"""What the chat endpoint may keep in sessions: a message, a session and an organization's quota bound it,
and a request whose messages could not be kept is refused before any work (the live server, the SDK)."""
import openai
import pytest

from accounts.models import ChatMessage, ChatSession
from accounts.storage import message_bytes
from billing.models import Hold
from tests.api.conftest import TINY

pytestmark = pytest.mark.money


@pytest.fixture
def auto_sessions(alice):
    alice.auto_create_sessions = True
    alice.save(update_fields=["auto_create_sessions"])
    return alice


def ask(client, content: str, **params):
    return client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": content}],
                                          max_tokens=4, temperature=0, **params)


def balance(org) -> int:
    org.credit_account.refresh_from_db()
    return org.credit_account.balance_micro


def test_a_long_message_with_truncate_prompt_tokens_is_refused_not_stored_whole(client, auto_sessions):
    long = "All work and no play makes Jack a dull boy. " * 27_000  # 1.2 MB
    with pytest.raises(openai.APIStatusError) as refused:
        ask(client, long, extra_body={"truncate_prompt_tokens": 64})
    error = refused.value
    assert error.status_code == 413 and error.code == "message_too_large" and error.body["param"] == "messages[0]"
    assert "256.0 KiB" in error.message and "CHAT_SESSION_MESSAGE_MAX_BYTES" in error.message
    assert not ChatSession.objects.exists() and not ChatMessage.objects.exists()
    assert not Hold.objects.exists() and balance(auto_sessions) == 1_000_000


def test_a_turn_that_would_grow_the_session_past_its_limit_is_refused(client, auto_sessions, settings):
    settings.CHAT_SESSION_MAX_BYTES = 2048
    session_id = ask(client, "Hello").model_extra["session_id"]
    kept = ChatMessage.objects.filter(session_id=session_id).count()
    with pytest.raises(openai.APIStatusError) as refused:
        ask(client, "x" * 2048, extra_body={"session_id": session_id})
    assert refused.value.status_code == 413 and refused.value.code == "session_too_large"
    assert "CHAT_SESSION_MAX_BYTES" in refused.value.message
    assert ChatMessage.objects.filter(session_id=session_id).count() == kept == 2
    assert Hold.objects.count() == 1  # the first turn's only


def test_the_organizations_quota_refuses_what_it_cannot_keep(client, auto_sessions):
    ask(client, "Hello")
    used = ChatSession.objects.get().size_bytes
    auto_sessions.session_storage_quota_bytes = used + 10
    auto_sessions.save(update_fields=["session_storage_quota_bytes"])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(client, "Hello again")
    assert refused.value.code == "storage_quota_exceeded" and "storage quota" in refused.value.message
    assert ChatSession.objects.count() == 1 and Hold.objects.count() == 1


def test_an_answer_that_does_not_fit_is_delivered_but_not_kept(client, auto_sessions, settings):
    question = {"role": "user", "content": "Hello"}
    settings.CHAT_SESSION_MAX_BYTES = message_bytes(question) + 10  # room for the question, not the answer
    completion = ask(client, question["content"])
    assert completion.choices[0].message.content
    assert ChatSession.objects.get().size_bytes == 0 and not ChatMessage.objects.exists()
