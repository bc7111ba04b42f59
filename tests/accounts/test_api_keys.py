from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.auth import api_key_authenticate
from accounts.models import APIKey, DISPLAY_PREFIX_LENGTH, key_digest
from accounts.services import api_key_revoke
from tests.factories import make_key, make_org

pytestmark = [pytest.mark.django_db, pytest.mark.money]


def test_the_secret_is_never_stored():
    key, secret = make_key(make_org("alice"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apikey")
        stored = [str(value) for row in cursor.fetchall() for value in row]
    assert not any(secret in value for value in stored)
    assert key.digest == key_digest(secret)
    assert key.prefix == secret[:DISPLAY_PREFIX_LENGTH]


def test_secrets_are_long_and_unique():
    org = make_org("alice")
    secrets = {make_key(org)[1] for _ in range(20)}
    assert len(secrets) == 20
    assert all(s.startswith("sk-") and len(s) >= 40 for s in secrets)


def test_the_secret_authenticates_its_own_organization():
    alice, bob = make_org("alice"), make_org("bob")
    key, secret = make_key(alice)
    make_key(bob)
    found = api_key_authenticate(secret)
    assert found.pk == key.pk
    assert found.organization == alice


@pytest.mark.parametrize("bad", ["", "sk-", "sk-nope", "Bearer x", "x" * 500])
def test_unknown_secrets_are_refused(bad):
    make_key(make_org("alice"))
    assert api_key_authenticate(bad) is None


def test_a_nearly_right_secret_is_refused():
    _, secret = make_key(make_org("alice"))
    assert api_key_authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None


def test_a_revoked_key_stops_working():
    key, secret = make_key(make_org("alice"))
    api_key_revoke(key=key)
    assert api_key_authenticate(secret) is None
    assert APIKey.objects.get(pk=key.pk).revoked_at is not None


def test_an_expired_key_stops_working():
    _, secret = make_key(make_org("alice"), expires_at=timezone.now() - timedelta(seconds=1))
    assert api_key_authenticate(secret) is None


def test_a_key_with_a_future_expiry_works():
    _, secret = make_key(make_org("alice"), expires_at=timezone.now() + timedelta(days=1))
    assert api_key_authenticate(secret) is not None


def test_use_records_last_used():
    key, secret = make_key(make_org("alice"))
    assert key.last_used_at is None
    api_key_authenticate(secret)
    key.refresh_from_db()
    assert key.last_used_at is not None
