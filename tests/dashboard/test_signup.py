"""Signing up verifies the email: the address gets a link, the account exists once the link is followed, and the
form answers the same whether or not the address has an account. Links in emails come from SITE_URL."""
import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse

from accounts.models import Invitation, Membership
from tests.factories import make_org

pytestmark = pytest.mark.django_db

PASSWORD = "plum-harbour-9-lantern"
SITE = "https://dash.example.com"
User = get_user_model()


@pytest.fixture(autouse=True)
def site(settings):
    settings.SITE_URL = SITE


@pytest.fixture
def alice():
    return User.objects.create_user("alice@example.com", PASSWORD)


def link(message, path: str) -> str:
    """The path of the SITE_URL link to `path` in an email."""
    found = re.search(rf"{re.escape(SITE)}({re.escape(path)}\S*)", message.body)
    assert found, message.body
    return found.group(1)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_sign_up_mails_a_link_and_following_it_makes_the_account(client):
    page = client.get(reverse("signup"))
    assert page.status_code == 200 and b'id="signup-form"' in page.content
    sent = client.post(reverse("signup"), {"email": "New.Person@Example.com"})
    assert sent.status_code == 302 and sent["Location"] == reverse("signup-sent")
    assert b"Check your email" in client.get(sent["Location"]).content
    assert not User.objects.exists() and not signed_in(client)  # nothing usable before the address is proven
    [message] = mail.outbox
    assert message.to == ["new.person@example.com"] and "dash.example.com" in message.subject

    confirm = link(message, "/accounts/signup/")
    form = client.get(confirm)
    assert form.status_code == 200 and b"new.person@example.com" in form.content
    assert not User.objects.exists()  # opening the link (as mail scanners do) makes nothing
    done = client.post(confirm, {"password1": PASSWORD, "password2": PASSWORD})
    assert done.status_code == 302 and done["Location"] == reverse("organization-create")
    user = User.objects.get()
    assert user.email == "new.person@example.com" and user.check_password(PASSWORD) and user.is_active
    assert signed_in(client)
    assert b"Create an organization" in client.get(done["Location"]).content

    client.post(reverse("logout"))
    again = client.post(confirm, {"password1": "another-9-password-x", "password2": "another-9-password-x"})
    assert again.status_code == 409 and b"already has an account" in again.content
    user.refresh_from_db()
    assert user.check_password(PASSWORD) and not signed_in(client)


def test_sign_up_answers_the_same_whether_or_not_the_email_has_an_account(client, alice):
    known = client.post(reverse("signup"), {"email": "ALICE@example.com"}, follow=True)
    unknown = client.post(reverse("signup"), {"email": "nobody@example.com"}, follow=True)
    assert known.redirect_chain == unknown.redirect_chain == [(reverse("signup-sent"), 302)]
    assert known.content == unknown.content
    assert b"already" not in known.content
    assert [m.to for m in mail.outbox] == [["alice@example.com"], ["nobody@example.com"]]
    owner_notice = mail.outbox[0]  # the owner learns of it, with the ways in, and no sign-up link
    assert "already has one" in owner_notice.body
    assert link(owner_notice, "/accounts/login/") and link(owner_notice, "/accounts/password-reset/")
    assert "/accounts/signup/" not in owner_notice.body
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD) and User.objects.count() == 1


def test_a_new_users_password_is_stored_with_argon2(client, settings):
    from config import settings as project

    settings.PASSWORD_HASHERS = project.PASSWORD_HASHERS  # the tests run with a fast hasher otherwise
    client.post(reverse("signup"), {"email": "bob@example.com"})
    client.post(link(mail.outbox[0], "/accounts/signup/"), {"password1": PASSWORD, "password2": PASSWORD})
    stored = User.objects.get(email="bob@example.com").password
    assert stored.startswith("argon2") and PASSWORD not in stored


@pytest.mark.parametrize("email, message", [
    ("not-an-email", "Enter a valid email address"),
    ("", "This field is required"),
    ("x" * 250 + "@example.com", "at most 254 characters"),
])
def test_a_bad_email_is_a_field_error_and_sends_nothing(client, email, message):
    response = client.post(reverse("signup"), {"email": email})
    assert response.status_code == 400
    assert any(message in error for error in response.context["form"].errors["email"])
    assert mail.outbox == []


@pytest.mark.parametrize("password1, password2, field, message", [
    (PASSWORD, PASSWORD + "x", "password2", "The two passwords do not match"),
    ("password", "password", "password1", "This password is too common"),
    ("q7#Lz", "q7#Lz", "password1", "This password is too short"),
    ("83920174651", "83920174651", "password1", "This password is entirely numeric"),
    ("carol@example.com", "carol@example.com", "password1", "too similar to the email"),
    ("", "", "password1", "This field is required"),
])
def test_password_errors_show_on_their_fields_and_make_no_account(client, password1, password2, field, message):
    client.post(reverse("signup"), {"email": "carol@example.com"})
    response = client.post(link(mail.outbox[0], "/accounts/signup/"), {"password1": password1,
                                                                       "password2": password2})
    assert response.status_code == 400
    assert any(message in error for error in response.context["form"].errors[field])
    assert message.encode() in response.content
    assert not User.objects.exists() and not signed_in(client)


def test_an_altered_or_expired_link_does_not_work(client, monkeypatch):
    client.post(reverse("signup"), {"email": "dave@example.com"})
    confirm = link(mail.outbox[0], "/accounts/signup/")
    altered = confirm.replace(confirm.split("/")[-2], confirm.split("/")[-2][:-3] + "abc")
    response = client.post(altered, {"password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 400 and b'id="signup-link-invalid"' in response.content
    later = time.time() + 3 * 24 * 3600 + 60  # PASSWORD_RESET_TIMEOUT (3 days) and a minute
    monkeypatch.setattr(time, "time", lambda: later)
    response = client.post(confirm, {"password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 400 and b'id="signup-link-invalid"' in response.content
    assert not User.objects.exists()


def test_an_invitee_signs_up_through_the_emailed_link_and_is_brought_back(client):
    org = make_org("acme")
    invitation = Invitation.objects.create(organization=org, email="newbie@example.com")
    url = reverse("invitation-accept", args=[invitation.token])
    client.post(reverse("signup"), {"email": "newbie@example.com", "next": url})
    done = client.post(link(mail.outbox[0], "/accounts/signup/"), {"password1": PASSWORD, "password2": PASSWORD})
    assert done.status_code == 302 and done["Location"] == url
    assert client.post(url).status_code == 302
    assert Membership.objects.get(organization=org).user.email == "newbie@example.com"


def test_a_next_page_with_a_host_of_its_own_is_dropped(client):
    """The Host header's own address (another port) is not this site: after signing up, no redirect goes there."""
    client.post(reverse("signup"), {"email": "erin@example.com", "next": "http://localhost:4444/phish"},
                HTTP_HOST="localhost:4444")
    done = client.post(link(mail.outbox[0], "/accounts/signup/"), {"password1": PASSWORD, "password2": PASSWORD})
    assert done["Location"] == reverse("organization-create")


def test_emailed_links_come_from_site_url_not_the_host_header(alice):
    """The Host header is the requester's to choose, port included: no link follows it."""
    forged = Client(HTTP_HOST="localhost:4444")
    forged.post(reverse("password_reset"), {"email": "alice@example.com"})
    forged.post(reverse("signup"), {"email": "frank@example.com"})
    org = make_org("acme")
    Membership.objects.create(user=alice, organization=org, role=Membership.Role.OWNER)
    forged.force_login(alice)
    assert forged.post(reverse("team-invite"), {"email": "gina@example.com", "role": "member"}).status_code == 302
    reset, signup, invitation = mail.outbox
    assert link(reset, "/accounts/reset/") and "dash.example.com" in reset.subject
    assert link(signup, "/accounts/signup/")
    assert link(invitation, "/invitations/")
    assert all("localhost" not in m.body and "localhost" not in m.subject for m in mail.outbox)
