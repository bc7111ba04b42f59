"""The sessions pages: the organization's sessions, one session's messages, rename and delete."""
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ChatMessage, ChatSession, Membership, User
from accounts.sessions import session_append, session_create
from tests.factories import make_org

pytestmark = [pytest.mark.django_db, pytest.mark.money]

CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}


def login(org, role=Membership.Role.MEMBER, client=None) -> Client:
    user = User.objects.create_user(f"{role}@{org.name}.test", "a long password 123")
    Membership.objects.create(user=user, organization=org, role=role)
    client = client or Client()
    client.force_login(user)
    return client


def conversation(org, first="What is the weather in Paris?", model="tiny-chat") -> ChatSession:
    session = session_create(organization=org, api_key=None, model=model)
    session_append(session, [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": first},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "18 degrees, sunny", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "It is 18 °C and sunny in Paris."},
    ], request_id="chatcmpl-1")
    return session


def rows(page: str) -> list[str]:
    return re.findall(r'data-session-id="([^"]+)"', page)


def test_the_list_is_most_recent_first_and_paginated():
    alice = make_org("alice")
    now = timezone.now()
    made = []
    for i in range(23):
        session = session_create(organization=alice, api_key=None, model="tiny-chat")
        ChatSession.objects.filter(pk=session.pk).update(title=f"talk {i}", updated_at=now - timedelta(minutes=i))
        made.append(session.pk)
    member = login(alice)
    first = member.get(reverse("sessions")).content.decode()
    second = member.get(reverse("sessions"), {"page": 2}).content.decode()
    assert rows(first) == made[:20] and rows(second) == made[20:]
    assert "Page 1 of 2" in first and "?page=2" in first and "Page 2 of 2" in second
    assert rows(member.get(reverse("sessions"), {"page": "nonsense"}).content.decode()) == made[:20]
    assert rows(member.get(reverse("sessions"), {"page": 99}).content.decode()) == made[20:]


def test_the_list_shows_title_model_and_message_count():
    alice = make_org("alice")
    session = conversation(alice, model="tiny-chat")
    page = login(alice).get(reverse("sessions")).content.decode()
    row = page.split(f'id="session-{session.pk}"')[1].split("</tr>")[0]
    assert "What is the weather in Paris?" in row and "tiny-chat" in row
    assert '<td class="num">5</td>' in row
    assert reverse("session-detail", args=[session.pk]) in row


def test_a_session_page_shows_its_messages_in_order_with_readable_tool_calls():
    alice = make_org("alice")
    session = conversation(alice)
    page = login(alice).get(reverse("session-detail", args=[session.pk])).content.decode()
    page = page.split(' id="session-messages"')[1]
    assert re.findall(r'data-testid="message" data-role="([a-z]+)"', page) == [
        "system", "user", "assistant", "tool", "assistant"]
    order = [page.index(text) for text in ("You answer briefly.", "What is the weather in Paris?", "get_weather",
                                            "18 degrees, sunny", "It is 18 °C and sunny in Paris.")]
    assert order == sorted(order)
    call = page.split('data-testid="tool-call"')[1].split("</div>")[0]
    assert "<strong>get_weather</strong>" in call and "call_1" in call
    assert '&quot;city&quot;: &quot;Paris&quot;,\n  &quot;unit&quot;' in call  # indented, one argument a line
    assert "result of <code>call_1</code>" in page


def test_a_long_session_is_paginated_in_order():
    alice = make_org("alice")
    session = session_create(organization=alice, api_key=None, model="tiny-chat")
    session_append(session, [{"role": "user", "content": f"line {i}"} for i in range(120)], request_id="r")
    member = login(alice)
    url = reverse("session-detail", args=[session.pk])
    first, second = member.get(url).content.decode(), member.get(url, {"page": 2}).content.decode()
    positions = [re.findall(r'id="message-(\d+)"', page) for page in (first, second)]
    assert positions == [[str(i) for i in range(100)], [str(i) for i in range(100, 120)]]
    assert f'href="{url}?page=2"' in first and "120 messages" in first


def test_members_rename_a_session_and_get_field_errors_for_bad_titles():
    alice = make_org("alice")
    session = conversation(alice)
    member = login(alice)
    url = reverse("session-rename", args=[session.pk])
    for bad, error in [("   ", "Give the session a title."), ("x" * 201, "at most 200 characters")]:
        response = member.post(url, {"title": bad})
        assert response.status_code == 200
        field = response.content.decode().split(' id="session-rename-form"')[1].split("</form>")[0]
        assert 'class="errorlist' in field and error in field
        session.refresh_from_db()
        assert session.title == "What is the weather in Paris?"
    response = member.post(url, {"title": "  Weather desk  "}, follow=True)
    session.refresh_from_db()
    assert session.title == "Weather desk"
    assert '<h1 id="session-title">Weather desk</h1>' in response.content.decode()


def test_members_delete_a_session_with_its_messages():
    alice = make_org("alice")
    session, kept = conversation(alice), conversation(alice, first="Keep me")
    member = login(alice)
    page = member.get(reverse("session-detail", args=[session.pk])).content.decode()
    assert f'action="{reverse("session-delete", args=[session.pk])}"' in page and "data-confirm=" in page
    response = member.post(reverse("session-delete", args=[session.pk]))
    assert response.status_code == 302 and response.url == reverse("sessions")
    assert not ChatSession.objects.filter(pk=session.pk).exists()
    assert not ChatMessage.objects.filter(session_id=session.pk).exists()
    assert rows(member.get(reverse("sessions")).content.decode()) == [kept.pk]
    assert member.get(reverse("session-detail", args=[session.pk])).status_code == 404


def test_another_organizations_session_is_404_on_every_url():
    alice, bob = make_org("alice"), make_org("bob")
    bobs = conversation(bob, first="Bob's secret plans")
    owner = login(alice, Membership.Role.OWNER)
    assert "Bob&#x27;s secret plans" not in owner.get(reverse("sessions")).content.decode()
    assert owner.get(reverse("session-detail", args=[bobs.pk])).status_code == 404
    assert owner.post(reverse("session-rename", args=[bobs.pk]), {"title": "mine now"}).status_code == 404
    assert owner.post(reverse("session-delete", args=[bobs.pk])).status_code == 404
    for unknown in ("sess_nope", "x" * 300, "%E2%80%A6"):
        assert owner.get(f"/sessions/{unknown}/").status_code == 404
    bobs.refresh_from_db()
    assert bobs.title == "Bob's secret plans" and bobs.messages.count() == 5


def test_rename_and_delete_need_the_csrf_token():
    alice = make_org("alice")
    session = conversation(alice)
    member = login(alice, client=Client(enforce_csrf_checks=True))
    assert member.post(reverse("session-rename", args=[session.pk]), {"title": "forged"}).status_code == 403
    assert member.post(reverse("session-delete", args=[session.pk])).status_code == 403
    session.refresh_from_db()
    assert session.title != "forged"

    page = member.get(reverse("session-detail", args=[session.pk])).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert member.post(reverse("session-delete", args=[session.pk]),
                       {"csrfmiddlewaretoken": token}).status_code == 302
    assert not ChatSession.objects.filter(pk=session.pk).exists()


def test_signed_out_visitors_are_sent_to_log_in():
    session = conversation(make_org("alice"))
    for url in (reverse("sessions"), reverse("session-detail", args=[session.pk])):
        response = Client().get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login"))
