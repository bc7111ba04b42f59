"""The API keys pages: the list every member sees, creation with the secret shown once, revocation."""
import re
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.auth import api_key_authenticate
from accounts.models import APIKey, Membership, User
from accounts.services import api_key_revoke
from core.catalogue import DEFAULT_MODEL_ID
from tests.factories import make_key, make_org

pytestmark = [pytest.mark.django_db, pytest.mark.money]

SECRET = re.compile(r"sk-[A-Za-z0-9_-]{40,}")


def login(org, role=Membership.Role.OWNER, email=None, client=None) -> Client:
    user = User.objects.create_user(email or f"{role}@{org.name}.test", "a long password 123")
    Membership.objects.create(user=user, organization=org, role=role)
    client = client or Client()
    client.force_login(user)
    return client


def valid(**changes) -> dict:
    return {"name": "backend", "expires_at": "", "spend_cap_usd": "", "spend_cap_window": "month",
            "rate_limit_rpm": "", "rate_limit_tpm": "", **changes}


def models_status(secret: str) -> int:
    return Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code


def test_the_secret_is_shown_once_and_works_with_every_setting():
    alice = make_org("alice")
    owner = login(alice)
    expiry = (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    response = owner.post(reverse("key-create"), valid(
        name="ci runner", expires_at=expiry, allowed_models=[DEFAULT_MODEL_ID], spend_cap_usd="12.345678",
        spend_cap_window="week", rate_limit_rpm="60", rate_limit_tpm="100000"))
    assert response.status_code == 201 and "no-store" in response["Cache-Control"]

    page = response.content.decode()  # the answer to the POST shows it; nothing else ever does
    shown = SECRET.findall(page)
    assert len(shown) == 1
    secret = shown[0]
    assert f'<code id="new-key-secret" data-testid="new-key-secret">{secret}</code>' in page
    assert 'data-copy="#new-key-secret"' in page
    assert "only time it is shown" in page
    assert f'data-replace-url="{reverse("keys")}"' in page  # a reload asks for the list, not the POST again

    key = api_key_authenticate(secret)
    assert key.organization == alice and key.name == "ci runner"
    assert key.allowed_models == [DEFAULT_MODEL_ID]
    assert (key.spend_cap_micro, key.spend_cap_window) == (12_345_678, "week")
    assert (key.rate_limit_rpm, key.rate_limit_tpm) == (60, 100_000)
    assert key.expires_at.strftime("%Y-%m-%dT%H:%M") == expiry
    assert key.created_by.email == "owner@alice.test"
    assert "12.345678 USD per week" in page and "60 requests/min" in page and "100,000 tokens/min" in page

    again = owner.get(reverse("keys")).content.decode()
    assert secret not in again and "new-key-secret" not in again
    assert f"{secret[:11]}…" in again  # the visible prefix stays in the table


def test_a_new_secret_is_stored_in_no_session():
    owner = login(make_org("alice"))
    created = owner.post(reverse("key-create"), valid(name="ci"))
    owner.get(reverse("usage"))  # a page other than the list: the secret must not wait in the session for it
    stored = [f"{row.session_data} {row.get_decoded()}" for row in Session.objects.all()]
    assert stored and not any(SECRET.search(data) for data in stored)
    secret = SECRET.search(created.content.decode()).group(0)
    assert secret not in owner.get(reverse("keys")).content.decode()


def test_a_key_with_only_a_name_allows_every_model_without_limits():
    owner = login(make_org("alice"))
    owner.post(reverse("key-create"), valid(name="plain"))
    key = APIKey.objects.get(name="plain")
    assert key.allowed_models == [] and key.expires_at is None
    assert (key.rate_limit_rpm, key.rate_limit_tpm, key.spend_cap_micro) == (None, None, None)
    row = owner.get(reverse("keys")).content.decode().split(f'id="key-{key.pk}"')[1].split("</tr>")[0]
    assert ">all<" in row and ">none<" in row and ">never<" in row


@pytest.mark.parametrize("field, value, error", [
    ("name", "   ", "Give the key a name."),
    ("name", "x" * 101, "at most 100 characters"),
    ("expires_at", "2001-01-01T10:00", "The expiry must be in the future."),
    ("expires_at", "next tuesday", "Enter a valid date/time."),
    ("spend_cap_usd", "ten", "The spend cap must be an amount in USD"),
    ("spend_cap_usd", "1.0000001", "The spend cap must have at most 6 decimal places."),
    ("spend_cap_usd", "0", "The spend cap must be between 0.000001 and"),
    ("spend_cap_usd", "-3", "The spend cap must be between 0.000001 and"),
    ("spend_cap_window", "year", "Select a valid choice."),
    ("rate_limit_rpm", "0", "greater than or equal to 1"),
    ("rate_limit_rpm", "-5", "greater than or equal to 1"),
    ("rate_limit_rpm", "99999999999", "less than or equal to 2147483647"),
    ("rate_limit_tpm", "1.5", "Enter a whole number."),
    ("rate_limit_tpm", "lots", "Enter a whole number."),
    ("allowed_models", "gpt-9", "Select a valid choice. gpt-9 is not one of the available choices."),
])
def test_each_bad_value_gets_its_field_error_and_no_key(field, value, error):
    owner = login(make_org("alice"))
    response = owner.post(reverse("key-create"), valid(**{field: value}))
    assert response.status_code == 200
    page = response.content.decode()
    errors = page.split(f'id="field-{field}"')[1].split('<div class="field"')[0]
    assert 'class="errorlist' in errors and error in errors.replace("&quot;", '"')
    assert not APIKey.objects.exists()
    assert not SECRET.search(page)


def test_revoking_takes_effect_on_the_next_api_request():
    alice = make_org("alice")
    key, secret = make_key(alice, name="old")
    assert models_status(secret) == 200
    owner = login(alice)
    page = owner.get(reverse("keys")).content.decode()
    assert f'action="{reverse("key-revoke", args=[key.pk])}"' in page and "data-confirm=" in page

    response = owner.post(reverse("key-revoke", args=[key.pk]), follow=True)
    assert models_status(secret) == 401
    row = response.content.decode().split(f'id="key-{key.pk}"')[1].split("</tr>")[0]
    assert 'data-status="revoked"' in row and ">revoked</span>" in row
    assert "Revoke</button>" not in row


def test_status_badges_tell_active_expired_and_revoked_apart():
    alice = make_org("alice")
    active, _ = make_key(alice, name="live")
    expired, _ = make_key(alice, name="late", expires_at=timezone.now() - timedelta(minutes=1))
    revoked, _ = make_key(alice, name="gone")
    api_key_revoke(key=revoked)
    page = login(alice, Membership.Role.MEMBER).get(reverse("keys")).content.decode()
    for key, status, badge in [(active, "active", "ok"), (expired, "expired", "off"), (revoked, "revoked", "off")]:
        row = page.split(f'id="key-{key.pk}"')[1].split("</tr>")[0]
        assert f'data-status="{status}"' in row
        assert f'<span class="badge {badge}" data-testid="key-status">{status}</span>' in row


def test_members_see_the_list_but_cannot_create_or_revoke():
    alice = make_org("alice")
    key, secret = make_key(alice, name="shared")
    member = login(alice, Membership.Role.MEMBER)
    page = member.get(reverse("keys")).content.decode()
    assert "shared" in page and key.prefix in page
    assert reverse("key-create") not in page and "Revoke</button>" not in page
    assert member.get(reverse("key-create")).status_code == 403
    assert member.post(reverse("key-create"), valid(name="sneaky")).status_code == 403
    assert member.post(reverse("key-revoke", args=[key.pk])).status_code == 403
    assert APIKey.objects.filter(organization=alice).count() == 1
    assert models_status(secret) == 200


def test_admins_manage_keys_like_owners():
    alice = make_org("alice")
    admin = login(alice, Membership.Role.ADMIN)
    assert admin.post(reverse("key-create"), valid(name="by admin")).status_code == 201
    assert APIKey.objects.filter(organization=alice, name="by admin").exists()


def test_another_organizations_keys_are_neither_listed_nor_revocable():
    alice, bob = make_org("alice"), make_org("bob")
    bobs, bob_secret = make_key(bob, name="bob's key")
    owner = login(alice)
    page = owner.get(reverse("keys")).content.decode()
    assert "bob&#x27;s key" not in page and bobs.prefix not in page
    assert owner.post(reverse("key-revoke", args=[bobs.pk])).status_code == 404
    assert owner.post(reverse("key-revoke", args=[2**70])).status_code == 404
    assert models_status(bob_secret) == 200


def test_forms_need_the_csrf_token():
    alice = make_org("alice")
    key, secret = make_key(alice)
    owner = login(alice, client=Client(enforce_csrf_checks=True))
    assert owner.post(reverse("key-create"), valid(name="forged")).status_code == 403
    assert owner.post(reverse("key-revoke", args=[key.pk])).status_code == 403
    assert not APIKey.objects.filter(name="forged").exists() and models_status(secret) == 200

    form = owner.get(reverse("key-create")).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    assert owner.post(reverse("key-create"), valid(name="real", csrfmiddlewaretoken=token)).status_code == 201


def test_signed_out_visitors_are_sent_to_log_in():
    for url in (reverse("keys"), reverse("key-create")):
        response = Client().get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_pages_act_for_the_current_organization_only():
    alice, bob = make_org("alice"), make_org("bob")
    alices, alice_secret = make_key(alice, name="alice key")
    bobs, _ = make_key(bob, name="bob key")
    owner = login(alice)
    Membership.objects.create(user=User.objects.get(email="owner@alice.test"), organization=bob,
                              role=Membership.Role.MEMBER)
    owner.post(reverse("organization-switch"), {"organization": bob.pk})
    page = owner.get(reverse("keys")).content.decode()
    assert bobs.prefix in page and alices.prefix not in page
    assert owner.post(reverse("key-revoke", args=[alices.pk])).status_code == 403  # a member in bob
    assert owner.post(reverse("key-create"), valid(name="in bob")).status_code == 403
    assert models_status(alice_secret) == 200 and not APIKey.objects.filter(name="in bob").exists()


def test_a_manager_changes_a_keys_limits_and_they_apply_from_its_next_request():
    alice = make_org("alice", credit_micro=1_000_000)
    owner = login(alice)
    key, secret = make_key(alice, "backend")
    page = owner.get(f"/keys/{key.pk}/limits/")
    assert page.status_code == 200 and 'id="key-limits-form"' in page.content.decode()
    response = owner.post(f"/keys/{key.pk}/limits/", {
        "allowed_models": [DEFAULT_MODEL_ID], "spend_cap_usd": "2.50", "spend_cap_window": "week",
        "rate_limit_rpm": "30", "rate_limit_tpm": ""})
    assert response.status_code == 302 and response.url == "/keys/"
    key.refresh_from_db()
    assert (key.allowed_models, key.spend_cap_micro, key.spend_cap_window, key.rate_limit_rpm, key.rate_limit_tpm) \
        == ([DEFAULT_MODEL_ID], 2_500_000, "week", 30, None)
    listing = owner.get("/keys/").content.decode()
    assert "30 requests/min" in listing and "2.50 USD per week" in listing
    models = Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert models["x-ratelimit-limit-requests"] == "30"  # the key's next request runs under the new limit
    # The form shows what is set, and clearing a field removes that limit.
    assert 'value="2.50"' in owner.get(f"/keys/{key.pk}/limits/").content.decode()
    owner.post(f"/keys/{key.pk}/limits/", {"spend_cap_usd": "", "spend_cap_window": "month", "rate_limit_rpm": "",
                                             "rate_limit_tpm": ""})
    key.refresh_from_db()
    assert (key.allowed_models, key.spend_cap_micro, key.rate_limit_rpm) == ([], None, None)
    assert key.name == "backend" and api_key_authenticate(secret) == key  # same key, same secret


@pytest.mark.parametrize("field, value, error", [
    ("rate_limit_rpm", "0", "greater than or equal to 1"),
    ("rate_limit_tpm", "lots", "Enter a whole number."),
    ("spend_cap_usd", "1.0000001", "spend cap"),
    ("spend_cap_window", "year", "Select a valid choice."),
    ("allowed_models", "no-such-model", "Select a valid choice."),
])
def test_bad_limits_are_field_errors_and_change_nothing(field, value, error):
    alice = make_org("alice")
    owner = login(alice)
    key, _ = make_key(alice, "backend")
    data = {"spend_cap_usd": "", "spend_cap_window": "month", "rate_limit_rpm": "", "rate_limit_tpm": "", field: value}
    response = owner.post(f"/keys/{key.pk}/limits/", data)
    assert response.status_code == 200 and error in response.content.decode()
    assert response.content.decode().count('class="errorlist') == 1
    key.refresh_from_db()
    assert (key.allowed_models, key.spend_cap_micro, key.rate_limit_rpm, key.rate_limit_tpm) == ([], None, None, None)


def test_only_managers_change_limits_and_only_of_their_organizations_keys():
    alice, bob = make_org("alice"), make_org("bob")
    key, _ = make_key(alice, "backend")
    bobs_key, _ = make_key(bob, "theirs")
    member = login(alice, role=Membership.Role.MEMBER)
    assert member.get(f"/keys/{key.pk}/limits/").status_code == 403
    assert member.post(f"/keys/{key.pk}/limits/", {"rate_limit_rpm": "1"}).status_code == 403
    assert 'data-testid="edit-limits"' not in member.get("/keys/").content.decode()
    owner = login(alice, email="owner@alice.test")
    assert owner.get(f"/keys/{bobs_key.pk}/limits/").status_code == 404
    assert owner.post(f"/keys/{bobs_key.pk}/limits/", {"spend_cap_window": "month", "rate_limit_rpm": "1"}).status_code == 404
    bobs_key.refresh_from_db()
    key.refresh_from_db()
    assert bobs_key.rate_limit_rpm is None and key.rate_limit_rpm is None


def test_saving_limits_keeps_a_model_the_catalogue_no_longer_has():
    alice = make_org("alice")
    owner = login(alice)
    key, _ = make_key(alice, "backend")
    APIKey.objects.filter(pk=key.pk).update(allowed_models=["retired-model"])
    form = owner.get(f"/keys/{key.pk}/limits/").content.decode()
    assert "retired-model (not served now)" in form
    owner.post(f"/keys/{key.pk}/limits/", {"allowed_models": ["retired-model"], "spend_cap_usd": "",
                                             "spend_cap_window": "month", "rate_limit_rpm": "5", "rate_limit_tpm": ""})
    key.refresh_from_db()
    assert (key.allowed_models, key.rate_limit_rpm) == (["retired-model"], 5)  # not widened to every model
