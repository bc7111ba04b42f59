"""/api/billing limits and settings: what owners and admins change is what the next read, and the platform, see."""
import pytest

from accounts.models import APIKey
from billing.models import BillingProfile
from tests.billing.test_tenant_api import assert_error, call

pytestmark = [pytest.mark.django_db, pytest.mark.money]

MODEL = "smollm2-135m-instruct"  # the built-in catalogue entry


def test_organization_limits_default_to_the_operators_and_change(acme, settings):
    settings.ORG_RATE_LIMIT_RPM, settings.ORG_RATE_LIMIT_TPM = 600, 90_000
    assert call((acme, "member"), "get", "/api/billing/limits").json() == {
        "rate_limit_rpm": None, "rate_limit_tpm": None, "effective_rate_limit_rpm": 600,
        "effective_rate_limit_tpm": 90_000}
    changed = call((acme, "admin"), "patch", "/api/billing/limits", {"rate_limit_rpm": 120})
    assert changed.status_code == 200 and changed.json() == {
        "rate_limit_rpm": 120, "rate_limit_tpm": None, "effective_rate_limit_rpm": 120,
        "effective_rate_limit_tpm": 90_000}
    call((acme, "owner"), "patch", "/api/billing/limits", {"rate_limit_tpm": 2**63 - 1})
    assert call((acme, "key"), "get", "/api/billing/limits").json()["effective_rate_limit_tpm"] == 2**63 - 1
    reset = call((acme, "owner"), "patch", "/api/billing/limits", {"rate_limit_rpm": None, "rate_limit_tpm": None})
    assert reset.json()["effective_rate_limit_rpm"] == 600
    acme.org.refresh_from_db()
    assert (acme.org.rate_limit_rpm, acme.org.rate_limit_tpm) == (None, None)


@pytest.mark.parametrize("body, param", [
    ({"rate_limit_rpm": 0}, "rate_limit_rpm"), ({"rate_limit_rpm": -5}, "rate_limit_rpm"),
    ({"rate_limit_rpm": "60"}, "rate_limit_rpm"), ({"rate_limit_rpm": 1.5}, "rate_limit_rpm"),
    ({"rate_limit_rpm": True}, "rate_limit_rpm"), ({"rate_limit_rpm": 2**31}, "rate_limit_rpm"),
    ({"rate_limit_tpm": 2**63}, "rate_limit_tpm"), ({"rate_limit_tpm": [1]}, "rate_limit_tpm"),
    ({"effective_rate_limit_rpm": 5}, "effective_rate_limit_rpm"), ({"rpm": 5}, "rpm"), ([1], None),
])
def test_bad_organization_limits_are_400s_naming_the_parameter(acme, body, param):
    assert_error(call((acme, "owner"), "patch", "/api/billing/limits", body), 400, param=param)
    acme.org.refresh_from_db()
    assert (acme.org.rate_limit_rpm, acme.org.rate_limit_tpm) == (None, None)


def test_a_keys_limits_change_and_show_in_the_next_read(acme):
    path = f"/api/billing/keys/{acme.key.pk}/limits"
    assert call((acme, "member"), "get", path).json() == {
        "id": acme.key.pk, "name": "test", "prefix": acme.key.prefix, "rate_limit_rpm": None, "rate_limit_tpm": None,
        "spend_cap_usd": None, "spend_cap_window": "month", "allowed_models": []}
    change = {"rate_limit_rpm": 30, "rate_limit_tpm": 40_000, "spend_cap_usd": "12.50", "spend_cap_window": "week",
              "allowed_models": [MODEL, MODEL]}
    changed = call((acme, "admin"), "patch", path, change)
    assert changed.status_code == 200, changed.content
    expected = {"id": acme.key.pk, "name": "test", "prefix": acme.key.prefix, "rate_limit_rpm": 30,
                "rate_limit_tpm": 40_000, "spend_cap_usd": "12.50", "spend_cap_window": "week",
                "allowed_models": [MODEL]}
    assert changed.json() == expected and call((acme, "key"), "get", path).json() == expected
    key = APIKey.objects.get(pk=acme.key.pk)
    assert (key.spend_cap_micro, key.allowed_models, key.rate_limit_rpm) == (12_500_000, [MODEL], 30)

    cleared = call((acme, "owner"), "patch", path,
                   {"spend_cap_usd": None, "allowed_models": [], "rate_limit_rpm": None})
    assert cleared.json() == {**expected, "spend_cap_usd": None, "allowed_models": [], "rate_limit_rpm": None}
    assert APIKey.objects.get(pk=acme.key.pk).spend_cap_micro is None


@pytest.mark.parametrize("body, param", [
    ({"rate_limit_rpm": 0}, "rate_limit_rpm"), ({"rate_limit_tpm": "1000"}, "rate_limit_tpm"),
    ({"spend_cap_usd": "0"}, "spend_cap_usd"), ({"spend_cap_usd": "-3"}, "spend_cap_usd"),
    ({"spend_cap_usd": "1.0000001"}, "spend_cap_usd"), ({"spend_cap_usd": "lots"}, "spend_cap_usd"),
    ({"spend_cap_usd": "Infinity"}, "spend_cap_usd"), ({"spend_cap_usd": {}}, "spend_cap_usd"),
    ({"spend_cap_window": "year"}, "spend_cap_window"), ({"spend_cap_window": None}, "spend_cap_window"),
    ({"allowed_models": ["gpt-4"]}, "allowed_models"), ({"allowed_models": MODEL}, "allowed_models"),
    ({"allowed_models": [["x"]]}, "allowed_models.0"), ({"allowed_models": None}, "allowed_models"),
    ({"allowed_models": [MODEL] * 101}, "allowed_models"), ({"name": "renamed"}, "name"), ({"id": 9}, "id"),
])
def test_bad_key_limits_are_400s_naming_the_parameter_and_change_nothing(acme, body, param):
    error = assert_error(call((acme, "owner"), "patch", f"/api/billing/keys/{acme.key.pk}/limits", body), 400,
                         param=param)
    if body.get("allowed_models") == ["gpt-4"]:
        assert MODEL in error["message"]  # the message lists the models that exist
    key = APIKey.objects.get(pk=acme.key.pk)
    assert (key.name, key.rate_limit_rpm, key.spend_cap_micro, key.spend_cap_window, key.allowed_models) == (
        "test", None, None, "month", [])


def settings_of(acme, role="member"):
    response = call((acme, role), "get", "/api/billing/settings")
    assert response.status_code == 200, response.content
    return response.json()


def test_settings_start_off_and_a_member_reads_them_without_creating_anything(acme, settings):
    settings.TOPUP_MIN_USD, settings.TOPUP_MAX_USD = 5, 500
    assert settings_of(acme) == {
        "auto_recharge": {"enabled": False, "threshold_usd": "0.00", "amount_usd": "0.00", "card_saved": False},
        "low_balance_threshold_usd": "0.00", "topup_min_usd": "5.00", "topup_max_usd": "500.00"}
    assert not BillingProfile.objects.exists()


def test_auto_recharge_needs_a_saved_card(acme):
    body = {"auto_recharge": {"enabled": True, "threshold_usd": "5", "amount_usd": "20"}}
    error = assert_error(call((acme, "owner"), "patch", "/api/billing/settings", body), 400,
                         param="auto_recharge.enabled")
    assert "top-up" in error["message"] and "Checkout" in error["message"]
    assert settings_of(acme)["auto_recharge"]["enabled"] is False

    assert not BillingProfile.objects.exists()  # the refused change left nothing behind
    BillingProfile.objects.create(organization=acme.org, stripe_payment_method_id="pm_card_visa")
    changed = call((acme, "admin"), "patch", "/api/billing/settings", body)
    assert changed.status_code == 200, changed.content
    assert changed.json()["auto_recharge"] == settings_of(acme, "key")["auto_recharge"] == {
        "enabled": True, "threshold_usd": "5.00", "amount_usd": "20.00", "card_saved": True}
    profile = BillingProfile.objects.get(organization=acme.org)
    assert (profile.auto_recharge_threshold_micro, profile.auto_recharge_amount_micro) == (5_000_000, 20_000_000)

    off = call((acme, "owner"), "patch", "/api/billing/settings", {"auto_recharge": {"enabled": False}})
    assert off.json()["auto_recharge"] == {"enabled": False, "threshold_usd": "5.00", "amount_usd": "20.00",
                                           "card_saved": True}


@pytest.mark.parametrize("body, param", [
    ({"auto_recharge": {"enabled": True, "threshold_usd": "5", "amount_usd": "4.99"}}, "auto_recharge.amount_usd"),
    ({"auto_recharge": {"enabled": True, "threshold_usd": "5", "amount_usd": "10001"}}, "auto_recharge.amount_usd"),
    ({"auto_recharge": {"enabled": True, "amount_usd": "20"}}, "auto_recharge.threshold_usd"),
    ({"auto_recharge": {"enabled": True, "threshold_usd": "5"}}, "auto_recharge.amount_usd"),
    ({"auto_recharge": {"enabled": "yes"}}, "auto_recharge.enabled"),
    ({"auto_recharge": {"amount_usd": "20.005"}}, "auto_recharge.amount_usd"),
    ({"auto_recharge": {"threshold_usd": "-1"}}, "auto_recharge.threshold_usd"),
    ({"auto_recharge": {"card_saved": True}}, "auto_recharge.card_saved"),
    ({"auto_recharge": {"when": "low"}}, "auto_recharge.when"), ({"auto_recharge": 5}, "auto_recharge"),
    ({"low_balance_threshold_usd": "-0.01"}, "low_balance_threshold_usd"),
    ({"low_balance_threshold_usd": None}, "low_balance_threshold_usd"), ({"topup_max_usd": "1"}, "topup_max_usd"),
])
def test_bad_settings_are_400s_naming_the_parameter_and_change_nothing(acme, settings, body, param):
    settings.TOPUP_MIN_USD, settings.TOPUP_MAX_USD = 5, 10_000
    BillingProfile.objects.create(organization=acme.org, stripe_payment_method_id="pm_card_visa")
    assert_error(call((acme, "owner"), "patch", "/api/billing/settings", body), 400, param=param)
    profile = BillingProfile.objects.get(organization=acme.org)
    assert not profile.auto_recharge_enabled and profile.auto_recharge_amount_micro == 0
    assert profile.auto_recharge_threshold_micro == profile.low_balance_threshold_micro == 0


def test_changing_a_threshold_rearms_its_trigger_and_nothing_else(acme):
    BillingProfile.objects.create(organization=acme.org, stripe_payment_method_id="pm_card_visa",
                                  auto_recharge_enabled=True, auto_recharge_threshold_micro=5_000_000,
                                  auto_recharge_amount_micro=20_000_000, auto_recharge_armed=False,
                                  low_balance_threshold_micro=1_000_000, low_balance_armed=False)

    def armed():
        profile = BillingProfile.objects.get(organization=acme.org)
        return profile.auto_recharge_armed, profile.low_balance_armed

    call((acme, "owner"), "patch", "/api/billing/settings", {"low_balance_threshold_usd": "1.00"})
    assert armed() == (False, False)  # the same threshold: the crossing already counted stays counted
    changed = call((acme, "owner"), "patch", "/api/billing/settings", {"low_balance_threshold_usd": "2.50"})
    assert changed.json()["low_balance_threshold_usd"] == "2.50" and armed() == (False, True)
    call((acme, "admin"), "patch", "/api/billing/settings", {"auto_recharge": {"amount_usd": "30"}})
    assert armed() == (False, True)
    call((acme, "admin"), "patch", "/api/billing/settings", {"auto_recharge": {"threshold_usd": "8"}})
    assert armed() == (True, True)
    assert settings_of(acme)["auto_recharge"] == {"enabled": True, "threshold_usd": "8.00", "amount_usd": "30.00",
                                                  "card_saved": True}


def test_a_member_cannot_change_settings_and_nothing_is_written(acme):
    assert_error(call((acme, "member"), "patch", "/api/billing/settings", {"low_balance_threshold_usd": "5"}), 403)
    assert not BillingProfile.objects.exists()
