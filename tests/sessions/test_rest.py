"""/api/sessions through HTTP against the live ASGI server: scoped to the key's organization."""
import pytest

from accounts.models import ChatMessage, ChatSession
from accounts.services import api_key_revoke
from accounts.sessions import session_append, session_create

pytestmark = pytest.mark.money


def assert_error(response, status, param=None, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def make_session(org, title="", messages=0):
    session = session_create(organization=org, api_key=None, model="tiny-chat")
    if title:
        ChatSession.objects.filter(pk=session.pk).update(title=title)
    for i in range(messages):
        session_append(session, [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"}],
                       request_id=f"r{i}")
    return session


def test_the_list_is_newest_activity_first_and_paginates(http, alice, alice_auth, bob):
    sessions = [make_session(alice, title=f"s{i}") for i in range(5)]
    make_session(bob, title="bob's")
    session_append(sessions[1], [{"role": "user", "content": "back to this one"}], request_id="r")

    first = http.get("/api/sessions", params={"limit": 2}, headers=alice_auth).json()
    assert first["object"] == "list" and first["total"] == 5 and first["has_more"] is True
    assert [s["title"] for s in first["data"]] == ["s1", "s4"]
    assert first["data"][0]["message_count"] == 1 and first["data"][0]["object"] == "chat.session"

    second = http.get("/api/sessions", params={"limit": 2, "offset": 2}, headers=alice_auth).json()
    assert [s["title"] for s in second["data"]] == ["s3", "s2"]
    third = http.get("/api/sessions", params={"limit": 2, "page": 3}, headers=alice_auth).json()
    assert [s["title"] for s in third["data"]] == ["s0"] and third["has_more"] is False
    beyond = http.get("/api/sessions", params={"page": 9}, headers=alice_auth).json()
    assert beyond["data"] == [] and beyond["total"] == 5


@pytest.mark.parametrize("params, param", [
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "ten"}, "limit"),
    ({"offset": -1}, "offset"), ({"offset": "1e3"}, "offset"), ({"page": 0}, "page"),
    ({"page": "9" * 5000}, "page"), ({"page": 2, "offset": 4}, "page"),
])
def test_bad_pagination_is_a_400_naming_the_parameter(http, alice_auth, params, param):
    assert_error(http.get("/api/sessions", params=params, headers=alice_auth), 400, param=param)


def test_detail_rename_and_delete(http, alice, alice_auth):
    session = make_session(alice, messages=3)
    url = f"/api/sessions/{session.pk}"

    detail = http.get(url, headers=alice_auth).json()
    assert detail["id"] == session.pk and detail["title"] == "m0" and detail["message_count"] == 3
    assert detail["model"] == "tiny-chat" and isinstance(detail["created_at"], int)

    renamed = http.patch(url, json={"title": "  Trip planning  "}, headers=alice_auth)
    assert renamed.status_code == 200 and renamed.json()["title"] == "Trip planning"
    assert http.get(url, headers=alice_auth).json()["title"] == "Trip planning"

    deleted = http.delete(url, headers=alice_auth)
    assert deleted.status_code == 204 and deleted.content == b""
    assert not ChatMessage.objects.filter(session_id=session.pk).exists()
    assert_error(http.get(url, headers=alice_auth), 404, code="session_not_found")


@pytest.mark.parametrize("body, param", [
    ({}, "title"), ({"title": ""}, "title"), ({"title": "   "}, "title"), ({"title": 5 * [1]}, "title"),
    ({"title": "x" * 201}, "title"), ({"title": "a\x00b"}, "title"), ({"title": "ok", "model": "gpt"}, "model"),
    ([{"title": "ok"}], None),
])
def test_a_bad_rename_is_a_400_and_changes_nothing(http, alice, alice_auth, body, param):
    session = make_session(alice, title="Kept")
    assert_error(http.patch(f"/api/sessions/{session.pk}", json=body, headers=alice_auth), 400, param=param)
    assert ChatSession.objects.get(pk=session.pk).title == "Kept"


def test_malformed_bodies_and_methods_get_error_objects(http, alice, alice_auth):
    url = f"/api/sessions/{make_session(alice).pk}"
    assert_error(http.patch(url, content=b"{nope", headers={**alice_auth, "Content-Type": "application/json"}), 400)
    assert_error(http.patch(url, content=b"title=x", headers={**alice_auth, "Content-Type": "text/plain"}), 415)
    assert_error(http.put(url, json={"title": "x"}, headers=alice_auth), 405, code="method_not_allowed")
    assert_error(http.post("/api/sessions", json={}, headers=alice_auth), 405)
    assert_error(http.get("/api/nothing-here", headers=alice_auth), 404)
    assert http.get("/api/sessions", headers={**alice_auth, "Accept": "text/html"}).status_code == 200


def test_messages_come_in_order_and_paginate(http, alice, alice_auth):
    session = make_session(alice, messages=5)
    url = f"/api/sessions/{session.pk}/messages"
    page = http.get(url, params={"limit": 3}, headers=alice_auth).json()
    assert [m["content"] for m in page["data"]] == ["m0", "m1", "m2"] and page["has_more"] is True
    assert page["data"][1] == {
        "object": "chat.session.message", "position": 1, "role": "assistant", "content": "m1", "name": None,
        "tool_calls": None, "tool_call_id": None, "request_id": "r1", "created_at": page["data"][1]["created_at"],
    }
    rest = http.get(url, params={"limit": 3, "page": 2}, headers=alice_auth).json()
    assert [m["position"] for m in rest["data"]] == [3, 4] and rest["total"] == 5 and rest["has_more"] is False


def test_another_organizations_session_is_404_everywhere_and_untouched(http, alice, bob_auth):
    session = make_session(alice, title="Private", messages=2)
    url = f"/api/sessions/{session.pk}"
    for response in (http.get(url, headers=bob_auth), http.patch(url, json={"title": "mine"}, headers=bob_auth),
                     http.delete(url, headers=bob_auth), http.get(f"{url}/messages", headers=bob_auth)):
        error = assert_error(response, 404, code="session_not_found")
        assert "Private" not in response.text and "m0" not in response.text
        assert error["type"] == "invalid_request_error"
    assert http.get("/api/sessions", headers=bob_auth).json()["data"] == []
    kept = ChatSession.objects.get(pk=session.pk)
    assert kept.title == "Private" and kept.messages.count() == 2


def test_keys_are_required_and_checked(http, alice, alice_key):
    url = f"/api/sessions/{make_session(alice, title='Mine').pk}"
    key, secret = alice_key
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer"}):
        for response in (http.get("/api/sessions", headers=headers), http.get(url, headers=headers),
                         http.delete(url, headers=headers), http.get(f"{url}/messages", headers=headers)):
            assert_error(response, 401, code="invalid_api_key")
    assert http.get(url, headers={"Authorization": f"Api-Key {secret}"}).json()["title"] == "Mine"
    api_key_revoke(key=key)
    assert_error(http.get(url, headers={"Authorization": f"Bearer {secret}"}), 401)
    assert ChatSession.objects.filter(title="Mine").exists()


async def test_the_api_answers_through_djangos_async_client_too(async_client, transactional_db):
    from asgiref.sync import sync_to_async

    from tests.factories import make_key, make_org

    org = await sync_to_async(make_org)("carol")
    secret = (await sync_to_async(make_key)(org))[1]
    session = await sync_to_async(make_session)(org, title="async")
    response = await async_client.get("/api/sessions", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200 and response.json()["data"][0]["id"] == session.pk
