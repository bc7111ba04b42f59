"""The Django admin as an operator uses it: every page loads, money rows stay read-only, and a balance
changes only through the adjust and refund actions, with a reason and the staff user on the ledger."""
from datetime import date
from types import SimpleNamespace

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from accounts.models import APIKey, Membership, Organization, User
from billing.models import (
    BillingProfile, CreditAccount, Hold, LedgerEntry, ModelPrice, Payment, PaymentIssue, StripeEvent, UsageDaily,
    UsageRecord,
)
from billing.services import hold_place, hold_settle, price_get
from core.money import Price
from tests.factories import make_key, make_org

pytestmark = pytest.mark.django_db

PRICE = Price(input_micro_per_mtok=1_000_000, output_micro_per_mtok=2_000_000)
MONEY_MODELS = [CreditAccount, LedgerEntry, Hold, UsageRecord, Payment, PaymentIssue, StripeEvent, UsageDaily,
                BillingProfile]
ORG_CHANGELIST = "admin:accounts_organization_changelist"
ACCOUNT_CHANGELIST = "admin:billing_creditaccount_changelist"


@pytest.fixture
def root_user():
    return User.objects.create_superuser("root@example.com", "pw")


@pytest.fixture
def root(client, root_user):
    client.force_login(root_user)
    return client


@pytest.fixture
def seeded(root_user):
    org = make_org("acme", credit_micro=10_000_000)
    Membership.objects.create(user=root_user, organization=org, role=Membership.Role.OWNER)
    key, secret = make_key(org, "prod")
    ModelPrice.objects.create(model_id="m", input_micro_per_mtok=1_000_000, output_micro_per_mtok=2_000_000)
    done = hold_place(organization=org, api_key=key, request_id="r-done", model_id="m", prompt_tokens=10,
                      max_tokens=20, price=PRICE)
    hold_settle(hold=done, prompt_tokens=10, completion_tokens=5)
    hold_place(organization=org, api_key=key, request_id="r-live", model_id="m", prompt_tokens=10, max_tokens=20,
               price=PRICE)
    payment = Payment.objects.create(organization=org, kind=Payment.Kind.CHECKOUT, status=Payment.Status.FAILED,
                                     amount_cents=500, stripe_payment_intent_id="pi_1", failure_message="declined")
    PaymentIssue.objects.create(organization=org, payment=payment, kind=PaymentIssue.Kind.PAYMENT_FAILED,
                                amount_cents=500, stripe_object_id="pi_1", detail="card declined")
    StripeEvent.objects.create(event_id="evt_1", type="payment_intent.payment_failed")
    UsageDaily.objects.create(day=date.today(), organization=org, api_key=key, model_id="m", requests=1,
                              prompt_tokens=10, completion_tokens=5, cost_micro=20)
    BillingProfile.objects.create(organization=org, stripe_customer_id="cus_1")
    return SimpleNamespace(org=org, key=key, secret=secret)


def admin_url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_registered_model_has_a_working_changelist_search_and_change_page(root, seeded):
    Group.objects.create(name="operators")
    opened = set()
    for model, model_admin in admin.site._registry.items():
        assert root.get(admin_url(model, "changelist")).status_code == 200, model
        if model_admin.search_fields:
            assert root.get(admin_url(model, "changelist"), {"q": "acme"}).status_code == 200, model
        if model_admin.date_hierarchy:
            assert root.get(admin_url(model, "changelist"), {f"{model_admin.date_hierarchy}__year": "2025"}
                            ).status_code == 200, model
        obj = model._default_manager.first()
        if obj is not None:
            assert root.get(admin_url(model, "change", obj.pk)).status_code == 200, model
            opened.add(model)
    assert {User, Group, Organization, APIKey, ModelPrice, *MONEY_MODELS} <= opened


def test_money_amounts_read_as_usd_in_the_lists(root, seeded):
    page = root.get(admin_url(CreditAccount, "changelist")).content.decode()
    # 10 USD granted, 20 micro-USD charged (10 prompt + 5 completion tokens), 50 held by r-live
    assert "$9.99998" in page and "$0.00005" in page and "$9.99993" in page
    assert "$5.00" in root.get(admin_url(Payment, "changelist")).content.decode()


@pytest.mark.parametrize("model", MONEY_MODELS, ids=lambda m: m.__name__)
def test_money_rows_cannot_be_added_changed_or_deleted(root, seeded, model):
    obj = model._default_manager.first()
    before = model._default_manager.count()
    change = root.get(admin_url(model, "change", obj.pk))
    assert change.status_code == 200 and b'name="_save"' not in change.content
    assert root.get(admin_url(model, "add")).status_code == 403
    assert root.post(admin_url(model, "change", obj.pk), {}).status_code == 403
    assert root.get(admin_url(model, "delete", obj.pk)).status_code == 403
    assert root.post(admin_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    changelist = root.get(admin_url(model, "changelist")).content.decode()
    assert 'value="delete_selected"' not in changelist
    assert model._default_manager.count() == before


def test_an_api_key_page_shows_the_prefix_and_never_the_secret_or_its_digest(root, seeded):
    page = root.get(admin_url(APIKey, "change", seeded.key.pk)).content.decode()
    assert seeded.key.prefix in page
    assert seeded.secret not in page and seeded.key.digest not in page
    listing = root.get(admin_url(APIKey, "changelist")).content.decode()
    assert seeded.key.prefix in listing and seeded.key.digest not in listing
    assert root.get(admin_url(APIKey, "add")).status_code == 403


def key_form(**overrides):
    return {"name": "prod", "expires_at_0": "", "expires_at_1": "", "allowed_models": "", "rate_limit_rpm": "",
            "rate_limit_tpm": "", "spend_cap_micro": "", "spend_cap_window": "month", **overrides}


def test_a_key_allow_list_limits_and_spend_cap_are_edited_in_usd(root, seeded):
    response = root.post(admin_url(APIKey, "change", seeded.key.pk), key_form(
        allowed_models="m\nother-model, m", rate_limit_rpm="60", rate_limit_tpm="100000",
        spend_cap_micro="12.50", spend_cap_window="week"))
    assert response.status_code == 302
    key = APIKey.objects.get(pk=seeded.key.pk)
    assert key.allowed_models == ["m", "other-model"]
    assert (key.rate_limit_rpm, key.rate_limit_tpm) == (60, 100_000)
    assert (key.spend_cap_micro, key.spend_cap_window) == (12_500_000, "week")
    assert key.digest == seeded.key.digest and key.organization_id == seeded.org.pk
    page = root.get(admin_url(APIKey, "change", key.pk)).content.decode()
    assert 'value="12.50"' in page and "m\nother-model" in page
    assert "$12.50 / week" in root.get(admin_url(APIKey, "changelist")).content.decode()


@pytest.mark.parametrize("cap, error", [("0.0000001", "at most six decimals"), ("lots", "Enter an amount in USD"),
                                        ("-1", "at least $0.00")])
def test_a_bad_spend_cap_is_refused_and_nothing_is_saved(root, seeded, cap, error):
    response = root.post(admin_url(APIKey, "change", seeded.key.pk), key_form(spend_cap_micro=cap))
    assert response.status_code == 200 and error in response.content.decode()
    assert APIKey.objects.get(pk=seeded.key.pk).spend_cap_micro is None


def test_revoking_keys_from_the_list(root, seeded):
    response = root.post(admin_url(APIKey, "changelist"), {"action": "revoke_keys", "index": 0,
                                                            "_selected_action": [seeded.key.pk]})
    assert response.status_code == 302
    assert APIKey.objects.get(pk=seeded.key.pk).revoked_at is not None
    assert "prod" in root.get(admin_url(APIKey, "changelist"), {"status": "revoked"}).content.decode()


def test_model_prices_are_edited_in_usd_per_million_tokens(root, seeded):
    price = ModelPrice.objects.get(model_id="m")
    form = {"model_id": "m", "input_micro_per_mtok": "0.15", "output_micro_per_mtok": "0.600001"}
    assert root.post(admin_url(ModelPrice, "change", price.pk), form).status_code == 302
    price.refresh_from_db()
    assert (price.input_micro_per_mtok, price.output_micro_per_mtok) == (150_000, 600_001)
    bad = root.post(admin_url(ModelPrice, "change", price.pk), dict(form, output_micro_per_mtok="-0.1"))
    assert bad.status_code == 200 and "at least $0.00" in bad.content.decode()
    price.refresh_from_db()
    assert price.output_micro_per_mtok == 600_001


def test_the_cached_input_price_is_shown_and_edited_in_usd_and_blank_means_half_the_input_price(root, seeded):
    price = ModelPrice.objects.get(model_id="m")
    url = admin_url(ModelPrice, "change", price.pk)
    assert 'name="cached_input_micro_per_mtok"' in root.get(url).content.decode()
    assert "$0.50 (half of input)" in root.get(admin_url(ModelPrice, "changelist")).content.decode()
    form = {"model_id": "m", "input_micro_per_mtok": "1", "cached_input_micro_per_mtok": "0.125001",
            "output_micro_per_mtok": "2"}
    assert root.post(url, form).status_code == 302
    price.refresh_from_db()
    assert price.cached_input_micro_per_mtok == 125_001
    assert 'value="0.125001"' in root.get(url).content.decode()
    assert "$0.125001" in root.get(admin_url(ModelPrice, "changelist")).content.decode()
    assert price_get(model_id="m", default=PRICE) == Price(1_000_000, 2_000_000, 125_001)
    for bad, error in (("-0.1", "at least $0.00"), ("1.01", "cannot exceed the input price")):
        refused = root.post(url, dict(form, cached_input_micro_per_mtok=bad))
        assert refused.status_code == 200 and error in refused.content.decode()
    price.refresh_from_db()
    assert price.cached_input_micro_per_mtok == 125_001
    assert root.post(url, dict(form, cached_input_micro_per_mtok="")).status_code == 302
    price.refresh_from_db()
    assert price.cached_input_micro_per_mtok is None
    assert price_get(model_id="m", default=PRICE).cached_input_micro_per_mtok == 500_000


def test_an_organization_shows_its_limits_balance_and_members(root, seeded):
    page = root.get(admin_url(Organization, "change", seeded.org.pk)).content.decode()
    assert "root@example.com" in page and "$9.99998" in page and "Empty: the default, 10,000." in page
    form = {"name": "acme", "rate_limit_rpm": "120", "rate_limit_tpm": "", "auto_create_sessions": "on",
            "session_retention_days": "30", "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"}
    assert root.post(admin_url(Organization, "change", seeded.org.pk), form).status_code == 302
    org = Organization.objects.get(pk=seeded.org.pk)
    assert (org.rate_limit_rpm, org.rate_limit_tpm, org.session_retention_days) == (120, None, 30)


def test_an_organization_added_in_the_admin_gets_its_credit_account(root):
    form = {"name": "new-co", "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"}
    assert root.post(admin_url(Organization, "add"), form).status_code == 302
    assert CreditAccount.objects.get(organization__name="new-co").balance_micro == 0


# --- adjustments and refunds ---------------------------------------------------------------------

def run_action(client, changelist, action, ids, **form):
    """The two steps an operator takes: pick the action in the list, then fill in its form."""
    first = client.post(reverse(changelist), {"action": action, "index": 0, "_selected_action": ids})
    assert first.status_code == 200 and b'name="reason"' in first.content
    return client.post(reverse(changelist), {"action": action, "_selected_action": ids, "apply": "yes", **form})


def snapshot(*orgs):
    return [(CreditAccount.objects.get(organization=o).balance_micro, CreditAccount.objects.get(organization=o)
             .held_micro) for o in orgs] + [LedgerEntry.objects.count()]


@pytest.mark.money
def test_adjust_balance_posts_one_ledger_row_with_the_reason_and_the_staff_user(root, root_user):
    org = make_org("acme", credit_micro=10_000_000)
    before = LedgerEntry.objects.count()
    first = root.post(reverse(ORG_CHANGELIST), {"action": "adjust_balance", "index": 0, "_selected_action": [org.pk]})
    assert "$10.00" in first.content.decode()  # the current balance, next to the form
    response = run_action(root, ORG_CHANGELIST, "adjust_balance", [org.pk], amount="-2.5",
                          reason="duplicate grant, ticket 42")
    assert response.status_code == 302
    assert LedgerEntry.objects.count() == before + 1
    entry = LedgerEntry.objects.first()
    assert (entry.kind, entry.amount_micro, entry.balance_after_micro) == ("adjustment", -2_500_000, 7_500_000)
    assert (entry.description, entry.reference, entry.created_by) == ("duplicate grant, ticket 42", "admin", root_user)
    assert CreditAccount.objects.get(organization=org).balance_micro == 7_500_000
    shown = root.get(response.url).content.decode()
    assert "Adjusted the balance of acme by -$2.50; it is now $7.50." in shown


@pytest.mark.money
def test_refund_credit_from_the_credit_accounts_list(root, root_user):
    org = make_org("acme", credit_micro=1_000_000)
    account = CreditAccount.objects.get(organization=org)
    response = run_action(root, ACCOUNT_CHANGELIST, "refund_credit", [account.pk], amount="1.000001",
                          reason="outage on 2 May")
    assert response.status_code == 302
    entry = LedgerEntry.objects.first()
    assert (entry.kind, entry.amount_micro, entry.description, entry.created_by) == (
        "refund", 1_000_001, "outage on 2 May", root_user)
    assert org.credit_account.entries.count() == 2
    account.refresh_from_db()
    assert account.balance_micro == 2_000_001


@pytest.mark.money
@pytest.mark.parametrize("action, amount, reason, error", [
    ("adjust_balance", "5", "", "Give a reason"),
    ("adjust_balance", "5", "   ", "Give a reason"),
    ("adjust_balance", "", "typo", "This field is required"),
    ("adjust_balance", "five", "typo", "Enter an amount in USD"),
    ("adjust_balance", "NaN", "typo", "Enter an amount in USD"),
    ("adjust_balance", "0", "typo", "must not be zero"),
    ("adjust_balance", "1.0000001", "typo", "at most six decimals"),
    ("adjust_balance", "5000000", "typo", "At most $1,000,000.00"),
    ("refund_credit", "-1", "typo", "enter a positive amount"),
    ("refund_credit", "0.00", "typo", "must not be zero"),
])
def test_a_bad_amount_or_missing_reason_shows_the_form_error_and_changes_nothing(root, action, amount, reason, error):
    org = make_org("acme", credit_micro=10_000_000)
    before = snapshot(org)
    response = run_action(root, ORG_CHANGELIST, action, [org.pk], amount=amount, reason=reason)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert snapshot(org) == before


@pytest.mark.money
def test_a_debit_that_would_leave_holds_uncovered_is_refused_and_changes_nothing(root):
    org = make_org("acme", credit_micro=10_000_000)
    hold_place(organization=org, api_key=None, request_id="r-big", model_id="m", prompt_tokens=1000, max_tokens=1,
               price=Price(input_micro_per_mtok=8_000_000_000, output_micro_per_mtok=0))  # holds $8.00
    before = snapshot(org)
    response = run_action(root, ORG_CHANGELIST, "adjust_balance", [org.pk], amount="-3", reason="correction")
    assert response.status_code == 200
    assert ("acme: a debit of $3.00 is more than the $2.00 available ($8.00 of the balance is held by requests "
            "in flight). Nothing was changed.") in response.content.decode()
    assert snapshot(org) == before
    ok = run_action(root, ORG_CHANGELIST, "adjust_balance", [org.pk], amount="-2", reason="correction")
    assert ok.status_code == 302 and snapshot(org)[0] == (8_000_000, 8_000_000)


@pytest.mark.money
def test_several_organizations_change_together_or_not_at_all(root):
    rich, poor = make_org("rich", credit_micro=10_000_000), make_org("poor", credit_micro=1_000_000)
    before = snapshot(rich, poor)
    refused = run_action(root, ORG_CHANGELIST, "adjust_balance", [rich.pk, poor.pk], amount="-2", reason="fee")
    assert refused.status_code == 200 and "poor: a debit of $2.00" in refused.content.decode()
    assert snapshot(rich, poor) == before
    done = run_action(root, ORG_CHANGELIST, "refund_credit", [rich.pk, poor.pk], amount="0.5", reason="outage")
    assert done.status_code == 302
    assert snapshot(rich, poor) == [(10_500_000, 0), (1_500_000, 0), before[-1] + 2]


@pytest.mark.money
def test_only_staff_allowed_to_post_to_the_ledger_see_or_run_the_actions(client, root_user):
    org = make_org("acme", credit_micro=10_000_000)
    staff = User.objects.create_user("ops@example.com", "pw", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_organization", "change_organization"]))
    client.force_login(staff)
    listing = client.get(reverse(ORG_CHANGELIST)).content.decode()
    assert "acme" in listing and "adjust_balance" not in listing and "refund_credit" not in listing
    before = snapshot(org)
    forged = client.post(reverse(ORG_CHANGELIST), {"action": "adjust_balance", "_selected_action": [org.pk],
                                                   "apply": "yes", "amount": "100", "reason": "me"})
    assert forged.status_code in (200, 302) and snapshot(org) == before

    staff.user_permissions.add(Permission.objects.get(codename="add_ledgerentry"))
    staff = User.objects.get(pk=staff.pk)  # a fresh permission cache
    client.force_login(staff)
    assert "adjust_balance" in client.get(reverse(ORG_CHANGELIST)).content.decode()
    done = run_action(client, ORG_CHANGELIST, "adjust_balance", [org.pk], amount="1", reason="goodwill")
    assert done.status_code == 302
    assert LedgerEntry.objects.first().created_by == staff
