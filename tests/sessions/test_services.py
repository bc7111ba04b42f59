"""accounts.sessions: look-up across tenants, history in order, titles, concurrent appends."""
import threading

import pytest
from django.db import connection

from accounts.models import ChatMessage, ChatSession
from accounts.sessions import session_append, session_create, session_get, session_history
from tests.factories import make_key, make_org

pytestmark = pytest.mark.money


@pytest.fixture
def org(db):
    return make_org("acme")


@pytest.fixture
def session(org):
    return session_create(organization=org, api_key=make_key(org)[0], model="tiny-chat")


def test_a_session_is_found_only_by_its_own_organization(org, session):
    other = make_org("other")
    assert session_get(org, session.pk) == session
    assert session_get(other, session.pk) is None
    assert session_get(org, "sess_unknown") is None
    assert session_get(org, "sess_\x00" + "x" * 100) is None
    assert session.pk.startswith("sess_") and session.model == "tiny-chat"


def test_history_replays_messages_in_order_with_only_the_fields_set(session):
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}
    session_append(session, [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Weather in Oslo?", "name": "ann"}], request_id="r1")
    session_append(session, [{"role": "assistant", "content": None, "tool_calls": [call]}], request_id="r1")
    session_append(session, [{"role": "tool", "content": "12 C", "tool_call_id": "call_1"},
                             {"role": "assistant", "content": "12 C in Oslo."}], request_id="r2")

    assert session_history(session) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?", "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "12 C", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "12 C in Oslo."},
    ]
    rows = ChatMessage.objects.filter(session=session).order_by("position")
    assert [m.position for m in rows] == [0, 1, 2, 3, 4]
    assert [m.request_id for m in rows] == ["r1", "r1", "r1", "r2", "r2"]


def test_an_append_moves_updated_at_and_titles_the_session_from_the_first_user_message(session):
    before = session.updated_at
    long_question = "Explain   the difference between\na list and a tuple in Python, with examples of when to use each"
    session_append(session, [{"role": "system", "content": "You are helpful."},
                             {"role": "user", "content": long_question}], request_id="r1")
    session.refresh_from_db()
    assert session.updated_at > before
    assert session.title == "Explain the difference between a list and a tuple in…"
    assert len(session.title) <= 61

    session_append(session, [{"role": "user", "content": "Something else"}], request_id="r2")
    session.refresh_from_db()
    assert session.title.startswith("Explain the difference")


def test_a_short_first_message_is_the_whole_title_and_a_renamed_session_keeps_its_name(org):
    short = session_create(organization=org, api_key=None, model="m")
    session_append(short, [{"role": "user", "content": "  Hello there  "}], request_id="r")
    assert ChatSession.objects.get(pk=short.pk).title == "Hello there"

    named = session_create(organization=org, api_key=None, model="m")
    ChatSession.objects.filter(pk=named.pk).update(title="My notes")
    named.refresh_from_db()
    session_append(named, [{"role": "user", "content": "Hello"}], request_id="r")
    assert ChatSession.objects.get(pk=named.pk).title == "My notes"


def test_an_append_to_a_deleted_session_adds_nothing(session):
    ChatSession.objects.filter(pk=session.pk).delete()
    session_append(session, [{"role": "user", "content": "hi"}], request_id="r")
    assert not ChatMessage.objects.exists()


def test_concurrent_appends_get_distinct_consecutive_positions(transactional_db):
    org = make_org("racers")
    session = session_create(organization=org, api_key=None, model="m")
    writers, barrier, errors = 8, threading.Barrier(8), []

    def append(i):
        try:
            barrier.wait()
            for round_ in range(3):
                session_append(session, [{"role": "user", "content": f"q{i}.{round_}"},
                                         {"role": "assistant", "content": f"a{i}.{round_}"}],
                               request_id=f"w{i}")
        except Exception as exc:  # reported below: a failed writer must fail the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=append, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    rows = list(ChatMessage.objects.filter(session=session).order_by("position"))
    assert [m.position for m in rows] == list(range(writers * 3 * 2))
    # Each append lands as one block: a question is followed by its own answer.
    for question, answer in zip(rows[::2], rows[1::2]):
        assert question.content.replace("q", "a") == answer.content
    assert [m["content"] for m in session_history(session)] == [m.content for m in rows]


def test_nul_and_escape_characters_round_trip_in_content_and_tool_calls(session):
    # On PostgreSQL text and jsonb refuse U+0000: core.fields stores it escaped, and reads it back as it was.
    call = {"id": "call_\x00", "type": "function",
            "function": {"name": "echo", "arguments": "{\"s\": \"\\u0000 \x00 \ue000 \ue0000 \ue000e\"}"}}
    messages = [{"role": "user", "content": "\x00start \ue000 \ue0000 \ue000e end\x00"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "assistant", "content": "\ue000\ue000\x00\x00"}]
    session_append(session, messages, request_id="r1")
    assert session_history(session) == messages
    session.refresh_from_db()
    assert session.title == "start \ue000 \ue0000 \ue000e end"
    with connection.cursor() as cursor:
        cursor.execute("SELECT content FROM accounts_chatmessage WHERE session_id = %s ORDER BY position",
                       [session.pk])
        stored = [row[0] for row in cursor.fetchall()]
    assert not any("\x00" in (text or "") for text in stored)
