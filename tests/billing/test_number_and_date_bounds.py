"""Amounts and days past any sane bound (1e999999, 1e20 USD, year 9999 or 1) are refused with the field named,
on every surface that reads them: the billing API, the dashboard's forms, the admin's actions and createkey."""
from io import StringIO

import pytest
from django.contrib import admin
from django.core.management import CommandError, call_command
from django.urls import reverse
from hypothesis import given, settings, strategies as st

from accounts.models import APIKey, Organization, User
from billing.models import BillingProfile, CreditAccount, LedgerEntry, ModelPrice, Payment
from core.money import AmountError, parse_usd
from tests.billing.test_tenant_api import assert_error, call
from tests.dashboard.test_usage import browser, parse
from tests.factories import make_org, tenant

pytestmark = [pytest.mark.django_db, pytest.mark.money]

# Each overflowed Decimal arithmetic, a 64-bit column or Python's calendar before it was bounded.
HUGE = ["1e999999", "-1e999999", "9" * 39, "1e20", "1E+30", "-1e20", "1e-999999", "0.1e-9999999"]
FAR_DAYS = ["?start=9999-12-31&end=9999-12-31", "?end=0001-01-01", "?start=0001-01-01&end=0001-01-02",
            "?start=9999-12-30", "?start=0001-01-01"]


@pytest.fixture
def acme():
    return tenant("acme")


def _nothing_changed(org):
    profile = BillingProfile.objects.filter(organization=org).first()
    assert profile is None or (profile.low_balance_threshold_micro, profile.auto_recharge_threshold_micro,
                               profile.auto_recharge_amount_micro) == (0, 0, 0)
    assert not APIKey.objects.filter(organization=org).exclude(spend_cap_micro=None).exists()
    assert not Payment.objects.exists()


# --- the parser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, micro", [("25", 25_000_000), ("0.000001", 1), ("-0", 0), ("1.500000000", 1_500_000),
                                         ("1e3", 1_000_000_000), ("+2.5", 2_500_000), ("0e-999999", 0)])
def test_amounts_within_bounds_read_exactly(text, micro):
    assert parse_usd(text, minimum_micro=-10**15) == micro


@pytest.mark.parametrize("text, code", [
    ("1e999999", "range"), ("-1e999999", "range"), ("9" * 39, "range"), ("1e-999999", "places"),
    ("0.1e-9999999", "places"), ("1e-99999999999999999999", "invalid"), ("NaN", "invalid"), ("-Infinity", "invalid"),
    ("sNaN", "invalid"), ("1_000", "invalid"), ("", "invalid"), ("1" * 41, "invalid"), ("0x10", "invalid"),
    ("1.0000001", "places"),
])
def test_amounts_past_the_bounds_are_named_errors(text, code):
    with pytest.raises(AmountError) as refused:
        parse_usd(text, minimum_micro=-10**15)
    assert refused.value.code == code and str(refused.value)


@settings(max_examples=400, deadline=None, database=None)
@given(st.text(max_size=45) | st.decimals().map(str) | st.integers().map(str) | st.floats().map(str)
       | st.builds(lambda m, e: f"{m}e{e}", st.integers(-10**6, 10**6), st.integers(-10**12, 10**12)))
def test_any_text_is_an_amount_within_bounds_or_an_amount_error(text):
    try:
        micro = parse_usd(text)
    except AmountError as refused:
        assert refused.code in {"invalid", "range", "places"}
    else:
        assert 0 <= micro <= 10**15


# --- the billing API ----------------------------------------------------------------------------

@pytest.mark.parametrize("amount", HUGE)
def test_a_top_up_of_an_absurd_amount_is_a_400_naming_it(acme, fake_stripe, amount):
    assert_error(call((acme, "owner"), "post", "/api/billing/topups", {"amount_usd": amount}), 400,
                 param="amount_usd")
    _nothing_changed(acme.org)


@pytest.mark.parametrize("amount", HUGE)
@pytest.mark.parametrize("body, param", [
    (lambda a: {"low_balance_threshold_usd": a}, "low_balance_threshold_usd"),
    (lambda a: {"auto_recharge": {"threshold_usd": a}}, "auto_recharge.threshold_usd"),
    (lambda a: {"auto_recharge": {"amount_usd": a}}, "auto_recharge.amount_usd"),
])
def test_absurd_settings_are_400s_naming_the_field(acme, amount, body, param):
    assert_error(call((acme, "owner"), "patch", "/api/billing/settings", body(amount)), 400, param=param)
    _nothing_changed(acme.org)


@pytest.mark.parametrize("amount", HUGE)
def test_an_absurd_spend_cap_is_a_400_naming_it(acme, amount):
    path = f"/api/billing/keys/{acme.key.pk}/limits"
    assert_error(call((acme, "owner"), "patch", path, {"spend_cap_usd": amount}), 400, param="spend_cap_usd")
    _nothing_changed(acme.org)


@pytest.mark.parametrize("query, param", [
    ("?start=9999-12-31&end=9999-12-31", "start"), ("?end=0001-01-01", "end"), ("?start=9999-12-30", "start"),
    ("?start=0001-01-01", "start"), ("?start=0001-01-01&end=0001-01-02", "start"), ("?end=9999-12-31", "end"),
])
def test_usage_of_days_out_of_range_is_a_400_naming_the_day(acme, query, param):
    error = assert_error(call((acme, "member"), "get", "/api/billing/usage" + query), 400, param=param)
    assert "1970-01-01" in error["message"] and "2999-12-31" in error["message"]


def test_usage_at_the_bounds_answers(acme):
    early = call((acme, "member"), "get", "/api/billing/usage?end=1970-01-05")
    assert early.status_code == 200 and early.json()["start"] == "1970-01-01" and len(early.json()["data"]) == 5
    late = call((acme, "member"), "get", "/api/billing/usage?start=2999-12-31")
    assert late.status_code == 200 and (late.json()["start"], late.json()["end"]) == ("2999-12-31", "2999-12-31")


@pytest.mark.parametrize("literal", ["1e999999", "-1e999999", "1" + "0" * 30, "9" * 5000, "NaN", "-Infinity"])
def test_json_number_literals_past_every_bound_are_400s(acme, fake_stripe, literal):
    """Not strings: numbers in the JSON itself, which the parser turns into inf, huge ints or refuses."""
    owner = browser(acme.users["owner"])
    for method, path, field in [("patch", "/api/billing/settings", "low_balance_threshold_usd"),
                                ("post", "/api/billing/topups", "amount_usd"),
                                ("patch", f"/api/billing/keys/{acme.key.pk}/limits", "spend_cap_usd")]:
        response = getattr(owner, method)(path, data=f'{{"{field}": {literal}}}', content_type="application/json")
        error = assert_error(response, 400, param=None if literal in ("9" * 5000, "NaN", "-Infinity") else field)
        assert error["message"]
    chat = browser(acme.users["owner"]).post(
        "/v1/chat/completions", content_type="application/json", headers={"Authorization": f"Bearer {acme.secret}"},
        data=f'{{"model": "m", "messages": [{{"role": "user", "content": "hi"}}], "temperature": {literal}}}')
    assert_error(chat, 400, param=None if literal in ("9" * 5000, "NaN", "-Infinity") else "temperature")
    _nothing_changed(acme.org)


# --- the dashboard ------------------------------------------------------------------------------

def _errors(page, form_id) -> list[str]:
    return [e.text for e in page.by_id(form_id).all("ul", class_="errorlist")]


@pytest.mark.parametrize("amount", HUGE)
def test_a_top_up_form_with_an_absurd_amount_shows_the_bounds(acme, fake_stripe, amount):
    page = parse(browser(acme.users["owner"]).post("/billing/topup/", {"amount_usd": amount}))
    errors = _errors(page, "topup-form")
    assert errors in (["A top-up must be from $5.00 to $10,000.00."],
                      ["This amount must have at most 2 decimal places."]), errors
    _nothing_changed(acme.org)


@pytest.mark.parametrize("amount", HUGE)
def test_a_settings_form_with_an_absurd_amount_shows_a_field_error(acme, amount):
    form = {"auto_recharge_threshold_usd": "0", "auto_recharge_amount_usd": "0", "low_balance_threshold_usd": amount}
    page = parse(browser(acme.users["admin"]).post("/billing/settings/", form))
    assert len(_errors(page, "billing-settings-form")) == 1
    assert page.by_id("id_low_balance_threshold_usd").attrs.get("aria-invalid") == "true"
    _nothing_changed(acme.org)


@pytest.mark.parametrize("amount", HUGE)
@pytest.mark.parametrize("page_of", [lambda key: "/keys/new/", lambda key: f"/keys/{key.pk}/limits/"])
def test_key_forms_with_an_absurd_spend_cap_show_a_field_error_and_save_nothing(acme, amount, page_of):
    form = {"name": "backend", "expires_at": "", "spend_cap_usd": amount, "spend_cap_window": "month",
            "rate_limit_rpm": "", "rate_limit_tpm": ""}
    response = browser(acme.users["owner"]).post(page_of(acme.key), form)
    assert response.status_code == 200
    text = response.content.decode()
    assert "The spend cap must" in text and text.count('class="errorlist') == 1
    assert APIKey.objects.filter(organization=acme.org).count() == 1
    _nothing_changed(acme.org)


@pytest.mark.parametrize("query", FAR_DAYS)
def test_the_usage_page_and_csv_refuse_days_out_of_range(acme, query):
    page = parse(browser(acme.users["member"]).get("/usage/" + query))
    assert "from 1970-01-01 to 2999-12-31" in page.by_id("usage-range").text
    assert "Showing the last 30 days instead" in page.by_id("usage-window").text
    csv_answer = browser(acme.users["member"]).get("/usage/requests.csv" + query)
    assert csv_answer.status_code == 400 and "from 1970-01-01 to 2999-12-31" in csv_answer.content.decode()


# --- the admin and the command line -------------------------------------------------------------

@pytest.fixture
def root(client):
    client.force_login(User.objects.create_superuser("root@example.com", "pw"))
    return client


@pytest.mark.parametrize("action", ["adjust_balance", "refund_credit"])
@pytest.mark.parametrize("amount", HUGE)
def test_the_admins_balance_actions_refuse_absurd_amounts(root, action, amount):
    org = make_org("acme", credit_micro=10_000_000)
    changelist = reverse("admin:accounts_organization_changelist")
    response = root.post(changelist, {"action": action, "_selected_action": [org.pk], "apply": "yes",
                                      "amount": amount, "reason": "typo"})
    assert response.status_code == 200
    text = response.content.decode()
    assert "At most $1,000,000.00 at a time." in text or "at most six decimals" in text
    assert CreditAccount.objects.get(organization=org).balance_micro == 10_000_000
    assert LedgerEntry.objects.count() == 1


@pytest.mark.parametrize("amount", HUGE)
def test_the_admin_refuses_absurd_prices(root, amount):
    form = {"model_id": "m", "input_micro_per_mtok": amount, "output_micro_per_mtok": "1",
            "cached_input_micro_per_mtok": ""}
    response = root.post(reverse("admin:billing_modelprice_add"), form)
    assert response.status_code == 200 and 'class="errorlist' in response.content.decode()
    assert not ModelPrice.objects.exists()


DATED_ADMINS = sorted((model for model, model_admin in admin.site._registry.items() if model_admin.date_hierarchy),
                      key=lambda model: model._meta.label)


@pytest.mark.parametrize("model", DATED_ADMINS, ids=lambda model: model._meta.label)
@pytest.mark.parametrize("query", ["{f}__year=9999", "{f}__year=9999&{f}__month=12", "{f}__year=99999999999999999999",
                                   "{f}__year=9999&{f}__month=12&{f}__day=31", "{f}__year=0"])
def test_the_admins_date_drill_down_past_the_calendar_shows_the_list_again(root, model, query):
    changelist = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    field = admin.site._registry[model].date_hierarchy
    response = root.get(f"{changelist}?{query.format(f=field)}")
    assert response.status_code == 302 and response.url.endswith("?e=1"), response.status_code
    assert root.get(f"{changelist}?{field}__year=9998&{field}__month=12&{field}__day=31").status_code == 200


@pytest.mark.parametrize("amount", ["1e20", "1e999999", "9" * 39, "1000000001", "1e-999999"])
def test_createkey_refuses_absurd_credit_naming_the_option(amount):
    with pytest.raises(CommandError, match="--credit-usd"):
        call_command("createkey", "--org", "acme", "--credit-usd", amount, stdout=StringIO())
    assert not Organization.objects.exists()
