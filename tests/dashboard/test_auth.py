"""Logging in and out, log-in throttling and password reset, as a visitor sees them (signing up: test_signup)."""
import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from accounts.web import throttle

pytestmark = pytest.mark.django_db

PASSWORD = "plum-harbour-9-lantern"
User = get_user_model()


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def clock(monkeypatch):
    """The throttle's clock, moved by hand: clock.advance(seconds)."""

    class Clock:
        now = 1_800_000_000.0

        def advance(self, seconds):
            self.now += seconds

    fake = Clock()
    monkeypatch.setattr(throttle, "now", lambda: fake.now)
    return fake


@pytest.fixture
def alice():
    return User.objects.create_user("alice@example.com", PASSWORD)


def log_in(client, email, password):
    return client.post(reverse("login"), {"username": email, "password": password})


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_a_password_hashed_with_djangos_argon2_parameters_logs_in_and_is_rehashed(client, settings):
    from django.contrib.auth.hashers import Argon2PasswordHasher

    from config import settings as project

    settings.PASSWORD_HASHERS = project.PASSWORD_HASHERS
    old = Argon2PasswordHasher().encode(PASSWORD, Argon2PasswordHasher().salt())  # 100 MiB, 8 lanes
    User.objects.create(email="carol@example.com", password=old)
    assert log_in(client, "carol@example.com", PASSWORD).status_code == 302
    assert "$m=19456,t=2,p=1$" in User.objects.get(email="carol@example.com").password


def test_login_page_links_to_sign_up_and_forgotten_password(client):
    page = client.get(reverse("login") + "?next=/team/").content.decode()
    assert 'id="login-form"' in page
    assert f'href="{reverse("signup")}?next=/team/"' in page
    assert f'href="{reverse("password_reset")}"' in page


def test_log_in_with_any_email_case_then_log_out_by_post(client, alice):
    response = log_in(client, "Alice@Example.COM", PASSWORD)
    assert response.status_code == 302 and signed_in(client)
    assert client.get(reverse("logout")).status_code == 405 and signed_in(client)
    assert client.post(reverse("logout")).status_code == 302 and not signed_in(client)


def test_wrong_password_is_a_form_error(client, alice):
    response = log_in(client, "alice@example.com", "not-it")
    assert response.status_code == 200 and not signed_in(client)
    assert b"do not match an account" in response.content


def test_forms_need_the_csrf_token(alice):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post(reverse("login"), {"username": "alice@example.com", "password": PASSWORD}).status_code == 403
    assert strict.post(reverse("signup"), {"email": "x@example.com"}).status_code == 403
    assert mail.outbox == []


def test_five_failures_lock_the_email_at_that_address_for_15_minutes(client, alice, clock):
    for _ in range(5):
        assert b"do not match an account" in log_in(client, "alice@example.com", "wrong").content
        clock.advance(60)
    refused = log_in(client, "alice@example.com", PASSWORD)  # one minute after the fifth failure
    assert refused.status_code == 429 and refused["Retry-After"] == str(14 * 60) and not signed_in(client)
    assert b"Too many failed log-in attempts. Try again in 14 minutes" in refused.content
    clock.advance(13 * 60)
    assert b"Try again in 1 minute " in log_in(client, "alice@example.com", PASSWORD).content
    assert not signed_in(client)
    clock.advance(60)  # 15 minutes after the fifth failure
    assert log_in(client, "alice@example.com", PASSWORD).status_code == 302 and signed_in(client)


def test_each_lock_that_follows_lasts_twice_as_long(client, alice, clock):
    for minutes in (15, 30, 60, 120):
        for _ in range(5):
            assert log_in(client, "alice@example.com", "wrong").status_code == 200
        refused = log_in(client, "alice@example.com", PASSWORD)
        assert refused.status_code == 429 and refused["Retry-After"] == str(minutes * 60)
        clock.advance(minutes * 60)
    assert log_in(client, "alice@example.com", PASSWORD).status_code == 302


def test_failures_from_another_address_do_not_lock_the_owner_out(alice, clock):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(5):
        log_in(attacker, "alice@example.com", "guess")
    assert log_in(attacker, "alice@example.com", "guess").status_code == 429
    owner = Client(REMOTE_ADDR="198.51.100.4")
    assert log_in(owner, "alice@example.com", PASSWORD).status_code == 302 and signed_in(owner)
    assert log_in(attacker, "alice@example.com", PASSWORD).status_code == 429  # the owner's log-in freed no one else


def test_the_lock_is_per_email(client, alice, clock):
    User.objects.create_user("bob@example.com", PASSWORD)
    for _ in range(5):
        log_in(client, "alice@example.com", "wrong")
    assert log_in(client, "ALICE@example.com", PASSWORD).status_code == 429
    assert log_in(client, "bob@example.com", PASSWORD).status_code == 302


def test_a_successful_log_in_clears_the_emails_failures(client, alice, clock):
    for _ in range(4):
        log_in(client, "alice@example.com", "wrong")
    assert log_in(client, "alice@example.com", PASSWORD).status_code == 302
    client.post(reverse("logout"))
    for _ in range(4):
        assert b"do not match" in log_in(client, "alice@example.com", "wrong").content
    assert log_in(client, "alice@example.com", PASSWORD).status_code == 302


def test_twenty_failures_from_one_ip_lock_that_ip(alice, clock):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for n in range(20):  # four tries at each of five addresses: no email reaches its own limit
        log_in(attacker, f"user{n % 5}@example.com", "guess")
    refused = log_in(attacker, "alice@example.com", PASSWORD)
    assert refused.status_code == 429
    assert b"Too many failed log-in attempts. Try again in 15 minutes" in refused.content
    assert not signed_in(attacker)
    elsewhere = Client(REMOTE_ADDR="198.51.100.4")
    assert log_in(elsewhere, "alice@example.com", PASSWORD).status_code == 302
    clock.advance(15 * 60)
    assert log_in(attacker, "alice@example.com", PASSWORD).status_code == 302


def reset_link(message) -> str:
    return re.search(rf"{re.escape(settings.SITE_URL)}(/accounts/reset/\S+/)", message.body).group(1)


def test_password_reset_by_email_sets_a_new_password(client, alice, clock):
    for _ in range(5):  # locked out, then reset: the new password works at once
        log_in(client, "alice@example.com", "forgotten")
    assert b'id="forgot-password-link"' in client.get(reverse("login")).content
    sent = client.post(reverse("password_reset"), {"email": "alice@example.com"})
    assert sent.status_code == 302 and sent["Location"] == reverse("password_reset_done")
    assert b"Check your email" in client.get(sent["Location"]).content
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.com"]

    form_page = client.get(reset_link(mail.outbox[0]), follow=True)
    assert b'id="set-password-form"' in form_page.content
    new_password = "quiet-meadow-41-violet"
    done = client.post(form_page.redirect_chain[-1][0], {"new_password1": new_password,
                                                          "new_password2": new_password})
    assert done.status_code == 302 and done["Location"] == reverse("password_reset_complete")
    assert b"Password changed" in client.get(done["Location"]).content

    assert b"do not match" in log_in(client, "alice@example.com", PASSWORD).content
    assert log_in(client, "alice@example.com", new_password).status_code == 302 and signed_in(client)
    client.post(reverse("logout"))
    reused = client.get(reset_link(mail.outbox[0]), follow=True)
    assert b'id="password-reset-invalid"' in reused.content


def test_password_reset_refuses_a_weak_new_password(client, alice):
    client.post(reverse("password_reset"), {"email": "alice@example.com"})
    form_page = client.get(reset_link(mail.outbox[0]), follow=True)
    refused = client.post(form_page.redirect_chain[-1][0], {"new_password1": "12345678",
                                                             "new_password2": "12345678"})
    assert refused.status_code == 200 and b"This password is too common" in refused.content
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_password_reset_answers_the_same_for_unknown_emails(client, alice):
    known = client.post(reverse("password_reset"), {"email": "alice@example.com"}, follow=True)
    unknown = client.post(reverse("password_reset"), {"email": "nobody@example.com"}, follow=True)
    assert known.redirect_chain == unknown.redirect_chain == [(reverse("password_reset_done"), 302)]
    assert known.content == unknown.content
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]


def test_password_reset_form_shows_a_bad_email(client):
    response = client.post(reverse("password_reset"), {"email": "nope"})
    assert response.status_code == 200 and b"Enter a valid email address" in response.content
    assert mail.outbox == []


@pytest.mark.parametrize("proxies, forwarded, expected", [
    (0, "203.0.113.9", "10.0.0.1"),  # no proxy trusted: the header is the client's to forge
    (1, "198.51.100.7, 203.0.113.9", "203.0.113.9"),  # one proxy: the address it saw
    (2, "198.51.100.7, 203.0.113.9", "198.51.100.7"),
    (2, "203.0.113.9", "10.0.0.1"),  # fewer hops than proxies: not trusted
])
def test_the_throttled_address_comes_from_trusted_proxies_only(settings, rf, proxies, forwarded, expected):
    from accounts.web.throttle import client_ip

    settings.TRUSTED_PROXIES = proxies
    request = rf.get("/accounts/login/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected
