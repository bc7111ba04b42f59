"""Server-side sessions through the chat endpoint: history prepended, turns appended, tenants apart."""
import openai
import pytest

from accounts.models import ChatMessage, ChatSession
from tests.api.conftest import TINY
from tests.factories import make_key, make_org

pytestmark = pytest.mark.money


def ask(client, content: str, **params):
    raw = client.chat.completions.with_raw_response.create(
        model=TINY, messages=[{"role": "user", "content": content}], max_tokens=4, temperature=0, **params)
    return raw.parse(), raw.headers


def test_without_sessions_nothing_is_kept(client, alice):
    completion, headers = ask(client, "Hello")
    assert "x-session-id" not in headers
    assert (completion.model_extra or {}).get("session_id") is None
    assert not ChatMessage.objects.exists()


def test_auto_created_session_carries_the_conversation(client, alice, base_url):
    alice.auto_create_sessions = True
    alice.save(update_fields=["auto_create_sessions"])
    first, headers = ask(client, "My name is Ada.")
    session_id = first.model_extra["session_id"]
    assert session_id.startswith("sess_") and headers["x-session-id"] == session_id

    alone, _ = ask(client, "What is my name?")
    follow, headers = ask(client, "What is my name?", extra_body={"session_id": session_id})
    assert headers["x-session-id"] == session_id and follow.model_extra["session_id"] == session_id
    # The history (first question and answer) is in the prompt of the follow-up.
    assert follow.usage.prompt_tokens > alone.usage.prompt_tokens + first.usage.completion_tokens
    messages = list(ChatMessage.objects.filter(session_id=session_id).order_by("position"))
    assert [(m.role, m.content) for m in messages] == [
        ("user", "My name is Ada."), ("assistant", first.choices[0].message.content),
        ("user", "What is my name?"), ("assistant", follow.choices[0].message.content),
    ]


def test_a_streamed_turn_is_kept_too(client, alice):
    alice.auto_create_sessions = True
    alice.save(update_fields=["auto_create_sessions"])
    first, _ = ask(client, "Remember the number seven.")
    session_id = first.model_extra["session_id"]
    stream = client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Which number?"}],
                                            max_tokens=4, temperature=0, stream=True,
                                            extra_body={"session_id": session_id})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert all(c.model_extra["session_id"] == session_id for c in chunks)
    kept = list(ChatMessage.objects.filter(session_id=session_id).order_by("position").values_list("content", flat=True))
    assert kept[-2:] == ["Which number?", text]


def test_another_tenants_session_is_not_found(client, alice, base_url):
    alice.auto_create_sessions = True
    alice.save(update_fields=["auto_create_sessions"])
    first, _ = ask(client, "A secret: 42.")
    session_id = first.model_extra["session_id"]
    bob = make_org("bob", credit_micro=1_000_000)
    bob_client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=make_key(bob)[1], max_retries=0)
    for unknown in (session_id, "sess_doesnotexist"):
        with pytest.raises(openai.NotFoundError) as err:
            bob_client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "secret?"}],
                                               max_tokens=2, extra_body={"session_id": unknown})
        assert err.value.body["param"] == "session_id" and err.value.code == "session_not_found"
    assert ChatMessage.objects.filter(session_id=session_id).count() == 2


def test_nul_characters_in_a_sessions_messages_are_kept_and_replayed(client, alice):
    # PostgreSQL's text refuses U+0000; a client may send it and a byte-level model may generate it.
    alice.auto_create_sessions = True
    alice.save(update_fields=["auto_create_sessions"])
    first, _ = ask(client, "a\x00b \ue000e")
    session_id = first.model_extra["session_id"]
    follow, _ = ask(client, "and\x00again", extra_body={"session_id": session_id})
    kept = list(ChatMessage.objects.filter(session_id=session_id).order_by("position").values_list("content", flat=True))
    assert kept == ["a\x00b \ue000e", first.choices[0].message.content, "and\x00again",
                    follow.choices[0].message.content]
    assert ChatSession.objects.get(pk=session_id).title == "a b \ue000e"


def test_a_name_with_a_nul_character_is_refused_before_any_work(client, alice):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "hi", "name": "a\x00"}],
                                       max_tokens=2)
    assert err.value.body["param"] == "messages[0].name" and "NUL" in err.value.body["message"]
