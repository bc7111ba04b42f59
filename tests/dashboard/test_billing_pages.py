"""The billing page: balance, ledger and payments for members; top-ups through Stripe and settings for managers."""
import pytest
from django.test import Client

from accounts.models import Membership
from billing.models import BillingProfile, Payment
from billing.services import credit_grant, hold_place
from tests.billing.fake_stripe import deliver
from tests.billing.money import USD, balance
from tests.billing.test_tenant_api import PRICE
from tests.dashboard.test_usage import browser, parse
from tests.factories import tenant

pytestmark = [pytest.mark.django_db, pytest.mark.money]

BILLING, TOPUP, SETTINGS = "/billing/", "/billing/topup/", "/billing/settings/"
SAVED = {"auto_recharge_enabled": "on", "auto_recharge_threshold_usd": "10", "auto_recharge_amount_usd": "25.00",
         "low_balance_threshold_usd": "2.5"}


@pytest.fixture
def acme():
    return tenant("acme")


@pytest.fixture
def globex():
    return tenant("globex")


def test_cards_show_balance_held_and_available_of_the_current_organization(acme, globex):
    credit_grant(organization=acme.org, amount_micro=12_500_000)
    credit_grant(organization=globex.org, amount_micro=99 * USD, description="globex credit")
    hold_place(organization=acme.org, api_key=acme.key, request_id="req-held", model_id="small",
               prompt_tokens=1_000, max_tokens=1_000, price=PRICE)  # holds 1,000 + 2,000 micro-USD
    page = parse(browser(acme.users["member"]).get(BILLING))
    assert page.by_id("balance").text == "$12.50"
    assert page.by_id("held").text == "$0.003"
    assert page.by_id("available").text == "$12.497"
    assert "globex credit" not in page.text and "$99.00" not in page.text


def test_the_ledger_is_paginated_newest_first(acme, globex):
    for i in range(1, 31):
        credit_grant(organization=acme.org, amount_micro=i * USD, description=f"grant {i}")
    credit_grant(organization=globex.org, amount_micro=USD, description="globex grant")
    client = browser(acme.users["member"])
    first = parse(client.get(BILLING))
    rows = first.rows("ledger")
    assert len(rows) == 25
    assert rows[0][1:] == ["Grant", "$30.00", "$465.00", "grant 30"]
    assert rows[-1][1:] == ["Grant", "$6.00", "$21.00", "grant 6"]
    older = first.all("a", **{"data-testid": "ledger-pager-next"})[0].attrs["href"]
    assert older == "/billing/?page=2#ledger-card"
    second = parse(client.get("/billing/?page=2"))
    assert [row[4] for row in second.rows("ledger")] == ["grant 5", "grant 4", "grant 3", "grant 2", "grant 1"]
    assert "globex grant" not in first.text + second.text


def test_a_top_up_goes_to_checkout_and_the_signed_webhook_shows_the_new_balance(acme, fake_stripe):
    credit_grant(organization=acme.org, amount_micro=3 * USD)
    client = browser(acme.users["admin"])
    response = client.post(TOPUP, {"amount_usd": "25.00"})
    payment = Payment.objects.get(organization=acme.org)
    session = fake_stripe.of("checkout.session")[0]
    assert response.status_code == 303 and response["Location"] == session["url"]
    assert session["url"].startswith("https://checkout.stripe.com/")
    assert (payment.status, payment.amount_cents, payment.created_by) == ("pending", 2500, acme.users["admin"])
    assert session["success_url"] == "http://testserver/billing/?topup=success"
    assert session["cancel_url"] == "http://testserver/billing/?topup=cancelled"

    back = parse(client.get("/billing/?topup=success"))
    assert "Payment received" in back.by_id("topup-notice").text
    assert "credit appears when Stripe confirms it" in back.by_id("topup-notice").text
    assert back.by_id("balance").text == "$3.00"
    assert back.rows("payments")[0][1:6] == ["Checkout", "$25.00", "Pending", "$0.00", "$0.00"]

    assert deliver(fake_stripe.complete_checkout(session["id"])).status_code == 200
    after = parse(client.get(BILLING))
    assert after.by_id("balance").text == "$28.00" and after.by_id("available").text == "$28.00"
    assert after.rows("payments")[0][1:6] == ["Checkout", "$25.00", "Succeeded", "$25.00", "$0.00"]
    assert after.rows("ledger")[0][1:4] == ["Topup", "$25.00", "$28.00"]
    assert not after.has("topup-notice")
    assert balance(acme.org) == 28 * USD


def test_a_cancelled_checkout_says_nothing_was_charged(acme):
    page = parse(browser(acme.users["owner"]).get("/billing/?topup=cancelled"))
    assert page.by_id("topup-notice").text == "Top-up cancelled: nothing was charged."


@pytest.mark.parametrize("amount, message", [
    ("3", "A top-up must be whole cents between $5.00 and $10,000.00; got $3.00"),
    ("10000.01", "A top-up must be whole cents between $5.00 and $10,000.00; got $10,000.01"),
    ("0", "A top-up must be from $5.00 to $10,000.00."),
    ("-25", "A top-up must be from $5.00 to $10,000.00."),
    ("5.001", "This amount must have at most 2 decimal places."),
    ("lots", "Enter an amount in USD, such as 25.00."),
    ("NaN", "Enter an amount in USD, such as 25.00."),
    ("", "This field is required."),
])
def test_a_bad_amount_is_a_field_error_and_opens_no_checkout(acme, fake_stripe, amount, message):
    page = parse(browser(acme.users["owner"]).post(TOPUP, {"amount_usd": amount}))
    form = page.by_id("topup-form")
    assert [e.text for e in form.all("ul", class_="errorlist")] == [message]
    assert page.by_id("id_amount_usd").attrs.get("value", "") == amount
    assert "From $5.00 to $10,000.00" in form.text
    assert not Payment.objects.exists() and not fake_stripe.of("checkout.session")


def test_without_stripe_the_page_says_so_and_a_top_up_changes_nothing(acme, settings):
    settings.STRIPE_SECRET_KEY = ""
    client = browser(acme.users["owner"])
    page = parse(client.get(BILLING))
    assert "not available on this server" in page.by_id("payments-unavailable").text
    assert not page.has("topup-form")
    answer = parse(client.post(TOPUP, {"amount_usd": "25.00"}))
    assert "Ask the operator for credit" in answer.by_id("payments-unavailable").text
    assert not Payment.objects.exists()


def test_a_checkout_stripe_refuses_is_a_message_and_charges_nothing(acme, fake_stripe, settings):
    settings.STRIPE_SECRET_KEY = "sk_test_not_the_fakes"  # the fake answers 401
    page = parse(browser(acme.users["owner"]).post(TOPUP, {"amount_usd": "25.00"}))
    errors = page.by_id("topup-form").all("ul", class_="errorlist")
    assert len(errors) == 1 and "nonfield" in errors[0].attrs["class"]
    assert "Invalid API Key provided" in errors[0].text and "Nothing was charged; please try again." in errors[0].text
    assert not Payment.objects.filter(status="pending").exists() and balance(acme.org) == 0


def test_members_read_the_values_but_cannot_top_up_or_change_settings(acme, fake_stripe):
    BillingProfile.objects.create(organization=acme.org, low_balance_threshold_micro=4 * USD)
    client = browser(acme.users["member"])
    page = parse(client.get(BILLING))
    assert page.has("topup-managers-only") and not page.has("topup-form") and not page.has("topup-submit")
    form = page.by_id("billing-settings-form")
    inputs = form.all("input", type="text") + form.all("input", type="checkbox")
    assert len(inputs) == 4 and all("disabled" in field.attrs for field in inputs)
    assert page.by_id("id_low_balance_threshold_usd").attrs["value"] == "4.00"
    assert page.has("settings-managers-only") and not page.has("billing-settings-submit")

    assert client.post(TOPUP, {"amount_usd": "25.00"}).status_code == 403
    denied = client.post(SETTINGS, {**SAVED, "auto_recharge_enabled": ""})
    assert denied.status_code == 403 and "owners and admins" in denied.content.decode()
    assert not Payment.objects.exists() and not fake_stripe.of("checkout.session")
    assert BillingProfile.objects.get(organization=acme.org).low_balance_threshold_micro == 4 * USD


def test_enabling_auto_recharge_without_a_saved_card_asks_for_a_top_up_first(acme):
    page = parse(browser(acme.users["owner"]).post(SETTINGS, SAVED))
    errors = page.by_id("billing-settings-form").all("ul", class_="errorlist")
    assert [e.text for e in errors] == [
        "No card is saved yet. Make one top-up with the form above first; its card is kept for auto-recharge."]
    assert "No card is saved yet" in page.by_id("card-saved").text
    assert not BillingProfile.objects.filter(auto_recharge_enabled=True).exists()


def test_settings_save_and_a_changed_threshold_re_arms(acme):
    BillingProfile.objects.create(organization=acme.org, stripe_payment_method_id="pm_card_visa",
                                  auto_recharge_armed=False, low_balance_threshold_micro=2_500_000,
                                  low_balance_armed=False)
    client = browser(acme.users["owner"])
    response = client.post(SETTINGS, SAVED)
    assert response.status_code == 302 and response["Location"] == "/billing/#billing-settings"
    profile = BillingProfile.objects.get(organization=acme.org)
    assert (profile.auto_recharge_enabled, profile.auto_recharge_threshold_micro,
            profile.auto_recharge_amount_micro, profile.low_balance_threshold_micro) == (
        True, 10 * USD, 25 * USD, 2_500_000)
    assert profile.auto_recharge_armed is True  # enabled and a new threshold: re-armed
    assert profile.low_balance_armed is False  # the alert threshold did not change

    client.post(SETTINGS, {**SAVED, "low_balance_threshold_usd": "3"})
    assert BillingProfile.objects.get(organization=acme.org).low_balance_armed is True
    page = parse(client.get(BILLING))
    assert page.by_id("id_auto_recharge_threshold_usd").attrs["value"] == "10.00"
    assert "checked" in page.by_id("id_auto_recharge_enabled").attrs
    assert "A card is saved" in page.by_id("card-saved").text
    follow = parse(client.post(SETTINGS, SAVED, follow=True))
    assert "Billing settings saved." in follow.text


@pytest.mark.parametrize("change, field, message", [
    ({"auto_recharge_threshold_usd": "abc"}, "auto_recharge_threshold_usd", "Enter an amount in USD, such as 25.00."),
    ({"auto_recharge_threshold_usd": "0"}, "auto_recharge_threshold_usd",
     "This amount must be above 0 while auto-recharge is enabled."),
    ({"auto_recharge_amount_usd": "2"}, "auto_recharge_amount_usd",
     "This amount must be between 5.00 and 10000.00 USD while auto-recharge is enabled."),
    ({"low_balance_threshold_usd": "-1"}, "low_balance_threshold_usd",
     "This amount must be between 0.00 and 1000000000.00 USD."),
    ({"low_balance_threshold_usd": "1.0000001"}, "low_balance_threshold_usd",
     "This amount must have at most 6 decimal places."),
    ({"low_balance_threshold_usd": ""}, "low_balance_threshold_usd", "This field is required."),
])
def test_bad_settings_are_field_errors_and_change_nothing(acme, change, field, message):
    BillingProfile.objects.create(organization=acme.org, stripe_payment_method_id="pm_card_visa")
    page = parse(browser(acme.users["admin"]).post(SETTINGS, {**SAVED, **change}))
    form = page.by_id("billing-settings-form")
    assert [e.text for e in form.all("ul", class_="errorlist")] == [message]
    field_box = page.by_id(f"id_{field}")
    assert field_box.attrs.get("aria-invalid") == "true"
    profile = BillingProfile.objects.get(organization=acme.org)
    assert (profile.auto_recharge_enabled, profile.low_balance_threshold_micro) == (False, 0)


def test_changes_need_the_csrf_token(acme):
    client = Client(enforce_csrf_checks=True)
    client.force_login(acme.users["owner"])
    BillingProfile.objects.create(organization=acme.org, stripe_payment_method_id="pm_card_visa")
    assert client.post(SETTINGS, SAVED).status_code == 403
    assert client.post(TOPUP, {"amount_usd": "25.00"}).status_code == 403
    page = parse(client.get(BILLING))
    token = page.by_id("billing-settings-form").all("input", name="csrfmiddlewaretoken")[0].attrs["value"]
    assert client.post(SETTINGS, {**SAVED, "csrfmiddlewaretoken": token}).status_code == 302
    assert BillingProfile.objects.get(organization=acme.org).auto_recharge_enabled is True


def test_signed_out_users_go_to_login_and_a_user_sees_the_current_organizations_billing(acme, globex):
    for path in (BILLING, TOPUP, SETTINGS):
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    credit_grant(organization=acme.org, amount_micro=5 * USD)
    credit_grant(organization=globex.org, amount_micro=7 * USD)
    both = acme.users["member"]
    Membership.objects.create(user=both, organization=globex.org, role="owner")
    client = browser(both)
    client.post("/organizations/switch/", {"organization": str(globex.org.pk)})
    page = parse(client.get(BILLING))
    assert page.by_id("balance").text == "$7.00" and page.has("billing-settings-submit")
    client.post("/organizations/switch/", {"organization": str(acme.org.pk)})
    page = parse(client.get(BILLING))
    assert page.by_id("balance").text == "$5.00" and not page.has("billing-settings-submit")
    assert client.post(SETTINGS, SAVED).status_code == 403  # a member here, although an owner of globex
