"""Auto-recharge charges the saved card once per threshold crossing, however many requests cross it together."""
import threading

import pytest
from django.core import mail
from django.db import connection

from accounts.models import User
from accounts.services import organization_get_or_create
from billing.models import BillingProfile, LedgerEntry, Payment, PaymentIssue
from billing.services import credit_grant, hold_place, hold_settle
from billing.stripe.customers import customer_for
from billing.tasks.payments import auto_recharge
from core.money import Price
from tests.billing.fake_stripe import deliver
from tests.billing.money import USD, balance

pytestmark = pytest.mark.money

# A request of one prompt and one completion token: up to $1 held, $0.50 charged when it generates nothing.
PRICE = Price(input_micro_per_mtok=USD // 2 * 1_000_000, output_micro_per_mtok=USD // 2 * 1_000_000)


def recharging_org(fake, *, credit_usd=12, card="pm_card_visa", enabled=True):
    """An organization recharged with $20 when its available credit falls under $10."""
    owner = User.objects.create_user("owner@alice.test")
    org, _ = organization_get_or_create(name="alice", owner=owner)
    credit_grant(organization=org, amount_micro=credit_usd * USD)
    customer_for(organization=org)
    BillingProfile.objects.filter(organization=org).update(
        auto_recharge_enabled=enabled, auto_recharge_threshold_micro=10 * USD, auto_recharge_amount_micro=20 * USD,
        stripe_payment_method_id=card,
    )
    fake.requests.clear()
    return org


def charges(fake) -> list[dict]:
    return [params for method, path, params in fake.requests if (method, path) == ("POST", "/v1/payment_intents")]


def settle_concurrently(org, workers: int, completion_tokens: int, prefix: str):
    barrier = threading.Barrier(workers)
    errors = []

    def request(i):
        try:
            barrier.wait()
            hold = hold_place(organization=org, api_key=None, request_id=f"{prefix}{i}", model_id="m",
                              prompt_tokens=1, max_tokens=1, price=PRICE)
            hold_settle(hold=hold, prompt_tokens=1, completion_tokens=completion_tokens)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_requests_crossing_the_threshold_together_charge_once_and_the_next_crossing_again(fake_stripe):
    org = recharging_org(fake_stripe, credit_usd=12)
    settle_concurrently(org, 10, completion_tokens=0, prefix="a")  # $12 - 10 x $0.50 = $7: under $10

    [charge] = charges(fake_stripe)
    profile = BillingProfile.objects.get(organization=org)
    assert (charge["amount"], charge["currency"], charge["customer"]) == ("2000", "usd", profile.stripe_customer_id)
    assert (charge["payment_method"], charge["off_session"], charge["confirm"]) == ("pm_card_visa", "true", "true")
    payment = Payment.objects.get()
    assert charge["metadata"] == {"organization_id": str(org.pk), "payment_id": str(payment.pk),
                                  "kind": "auto_recharge"}
    assert (payment.kind, payment.status, payment.credited_micro) == ("auto_recharge", "succeeded", 20 * USD)
    assert payment.stripe_payment_intent_id == fake_stripe.of("payment_intent")[0]["id"]
    assert balance(org) == (12 - 5 + 20) * USD
    assert profile.auto_recharge_armed is True  # the credit lifted it back over the threshold

    settle_concurrently(org, 20, completion_tokens=1, prefix="b")  # $27 - 20 x $1 = $7: under again
    assert len(charges(fake_stripe)) == 2
    assert list(Payment.objects.values_list("status", flat=True)) == ["succeeded", "succeeded"]
    assert balance(org) == (27 - 20 + 20) * USD
    assert org.credit_account.entries.filter(kind=LedgerEntry.Kind.TOPUP).count() == 2


@pytest.mark.django_db
def test_the_payment_intent_webhook_after_the_task_credited_adds_nothing(fake_stripe):
    org = recharging_org(fake_stripe, credit_usd=5)
    assert auto_recharge.delay(org.pk).get() == "succeeded"
    assert balance(org) == 25 * USD
    intent = fake_stripe.of("payment_intent")[0]
    assert deliver(fake_stripe.event_of("payment_intent.succeeded", intent["id"])).status_code == 200
    assert balance(org) == 25 * USD
    assert Payment.objects.get().stripe_charge_id == intent["latest_charge"]


@pytest.mark.django_db
@pytest.mark.parametrize("card, says, code", [
    ("pm_card_chargeDeclined", "Your card was declined.", "card_declined"),
    ("pm_card_authenticationRequired", "This transaction requires authentication.", "authentication_required"),
])
def test_a_card_that_cannot_be_charged_fails_the_payment_and_alerts_once(
    fake_stripe, django_capture_on_commit_callbacks, card, says, code,
):
    org = recharging_org(fake_stripe, credit_usd=5, card=card)
    with django_capture_on_commit_callbacks(execute=True):
        assert auto_recharge(org.pk) == "failed"
        intent = fake_stripe.of("payment_intent")[0]
        # Stripe's own payment_intent.payment_failed webhook for the same attempt raises no second alert.
        deliver(fake_stripe.event_of("payment_intent.payment_failed", intent["id"]))
    payment = Payment.objects.get()
    assert payment.status == "failed" and says in payment.failure_message
    assert payment.stripe_payment_intent_id == intent["id"]
    issue = PaymentIssue.objects.get()
    assert (issue.kind, issue.payment, issue.stripe_object_id) == ("payment_failed", payment, intent["id"])
    assert code in issue.detail
    [message] = mail.outbox
    assert "Payment Failed" in message.subject and says in message.body
    assert sorted(message.to) == ["billing-ops@example.com", "owner@alice.test"]
    assert balance(org) == 5 * USD


@pytest.mark.django_db
def test_without_a_saved_card_it_skips_and_alerts(fake_stripe, django_capture_on_commit_callbacks):
    org = recharging_org(fake_stripe, credit_usd=5, card="")
    with django_capture_on_commit_callbacks(execute=True):
        assert auto_recharge(org.pk) == "no_card"
    assert charges(fake_stripe) == [] and not Payment.objects.exists()
    issue = PaymentIssue.objects.get()
    assert issue.kind == "payment_failed" and "no card is saved" in issue.detail
    [message] = mail.outbox
    assert "no card is saved" in message.body
    assert balance(org) == 5 * USD


@pytest.mark.django_db
def test_when_it_is_off_or_no_longer_needed_nothing_is_charged(fake_stripe, settings):
    org = recharging_org(fake_stripe, credit_usd=5, enabled=False)
    assert auto_recharge(org.pk) == "disabled"
    BillingProfile.objects.filter(organization=org).update(auto_recharge_enabled=True, auto_recharge_armed=False)
    credit_grant(organization=org, amount_micro=10 * USD)  # topped up while the task waited in the queue
    assert auto_recharge(org.pk) == "not_needed"
    assert BillingProfile.objects.get(organization=org).auto_recharge_armed is True
    settings.STRIPE_SECRET_KEY = None
    BillingProfile.objects.filter(organization=org).update(auto_recharge_threshold_micro=100 * USD)
    assert auto_recharge(org.pk) == "not_configured"
    assert charges(fake_stripe) == [] and not Payment.objects.exists() and not PaymentIssue.objects.exists()
    assert balance(org) == 15 * USD
