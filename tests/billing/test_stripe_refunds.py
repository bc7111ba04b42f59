"""Refunds claw back what they refund, disputes and failed payments reach the operators and the organization."""
import pytest
from django.core import mail

from accounts.models import User
from accounts.services import organization_get_or_create
from billing.models import LedgerEntry, Payment, PaymentIssue
from billing.services import credit_grant, hold_place
from billing.stripe.checkout import topup_session_create
from core.money import Price
from tests.billing.fake_stripe import deliver
from tests.billing.money import USD, balance

pytestmark = pytest.mark.money


@pytest.fixture
def org(db):
    owner = User.objects.create_user("owner@alice.test")
    organization, _ = organization_get_or_create(name="alice", owner=owner)
    return organization


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run what waits for the commit (alert emails) as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def paid(fake, org, usd=25) -> tuple[Payment, str]:
    """A Checkout top-up paid and delivered: the Payment and its charge id."""
    payment, _ = topup_session_create(organization=org, amount_micro=usd * USD, created_by=None,
                                      success_url="https://app.example.com/ok", cancel_url="https://app.example.com/")
    assert deliver(fake.complete_checkout(payment.stripe_checkout_session_id)).status_code == 200
    payment.refresh_from_db()
    assert payment.credited_micro == usd * USD
    return payment, payment.stripe_charge_id


def clawbacks(org) -> list[int]:
    return list(org.credit_account.entries.filter(kind=LedgerEntry.Kind.CLAWBACK).order_by("id")
                .values_list("amount_micro", flat=True))


def test_a_full_refund_takes_back_all_the_credit_it_bought(fake_stripe, org):
    credit_grant(organization=org, amount_micro=3 * USD)
    payment, charge = paid(fake_stripe, org, 25)
    event = fake_stripe.refund(charge)
    assert deliver(event).status_code == 200
    assert balance(org) == 3 * USD
    payment.refresh_from_db()
    assert (payment.refunded_cents, payment.clawed_back_micro, payment.status) == (2500, 25 * USD, "succeeded")
    entry = org.credit_account.entries.filter(kind="clawback").get()
    assert (entry.amount_micro, entry.reference) == (-25 * USD, payment.stripe_payment_intent_id)
    assert deliver(event).json()["duplicate"] is True
    assert balance(org) == 3 * USD and not PaymentIssue.objects.exists()


def test_partial_refunds_take_back_only_their_new_part_whatever_the_replays(fake_stripe, org):
    payment, charge = paid(fake_stripe, org, 25)
    first = fake_stripe.refund(charge, 1000)
    deliver(first)
    assert balance(org) == 15 * USD
    second = fake_stripe.refund(charge, 500)  # amount_refunded is now 1500: 500 more
    assert second["data"]["object"]["amount_refunded"] == 1500
    deliver(second)
    assert balance(org) == 10 * USD

    # The same refunds again as new deliveries (another event id, as a resend or reconciliation could bring):
    # the older one arriving late and the newer one again take nothing.
    for event in (first, second):
        assert deliver({**event, "id": event["id"] + "_resent"}).status_code == 200
    assert clawbacks(org) == [-10 * USD, -5 * USD]
    payment.refresh_from_db()
    assert (payment.refunded_cents, payment.clawed_back_micro) == (1500, 15 * USD)

    deliver(fake_stripe.refund(charge))  # the rest
    assert clawbacks(org) == [-10 * USD, -5 * USD, -10 * USD]
    assert balance(org) == 0


def test_a_refund_delivered_before_its_payment_is_still_taken_back(fake_stripe, org):
    payment, _ = topup_session_create(organization=org, amount_micro=25 * USD, created_by=None,
                                      success_url="https://app.example.com/ok", cancel_url="https://app.example.com/")
    completed = fake_stripe.complete_checkout(payment.stripe_checkout_session_id)
    charge = fake_stripe.of("payment_intent")[0]["latest_charge"]
    deliver(fake_stripe.refund(charge, 1000))
    assert balance(org) == 0
    deliver(completed)
    assert balance(org) == 15 * USD and clawbacks(org) == [-10 * USD]
    payment.refresh_from_db()
    assert (payment.credited_micro, payment.refunded_cents, payment.clawed_back_micro) == (25 * USD, 1000, 10 * USD)
    deliver(fake_stripe.refund(charge))
    assert balance(org) == 0


def test_a_refund_of_credit_already_spent_takes_what_it_can_and_alerts(fake_stripe, org, committed):
    payment, charge = paid(fake_stripe, org, 25)
    price = Price(input_micro_per_mtok=20 * USD * USD, output_micro_per_mtok=0)
    hold_place(organization=org, api_key=None, request_id="r1", model_id="m", prompt_tokens=1, max_tokens=0,
               price=price)  # a request in flight holds $20
    mail.outbox.clear()
    with committed():
        deliver(fake_stripe.refund(charge))

    account = org.credit_account
    assert balance(org) == 20 * USD and account.held_micro == 20 * USD  # the hold stays covered
    assert clawbacks(org) == [-5 * USD]
    issue = PaymentIssue.objects.get()
    assert (issue.kind, issue.payment, issue.organization) == ("refund_shortfall", payment, org)
    assert issue.amount_cents == 2000
    assert "20.000000 USD was not taken back" in issue.detail
    payment.refresh_from_db()
    assert (payment.refunded_cents, payment.clawed_back_micro) == (2500, 5 * USD)
    [message] = mail.outbox
    assert "Refund Shortfall" in message.subject and "20.00" in message.subject
    assert sorted(message.to) == ["billing-ops@example.com", "owner@alice.test"]


def test_a_dispute_is_recorded_and_emailed_without_touching_the_balance(fake_stripe, org, committed):
    payment, charge = paid(fake_stripe, org, 25)
    mail.outbox.clear()
    event = fake_stripe.dispute(charge, reason="fraudulent")
    with committed():
        deliver(event)
        deliver(event)
    issue = PaymentIssue.objects.get()
    dispute_id = event["data"]["object"]["id"]
    assert (issue.kind, issue.payment, issue.organization) == ("dispute", payment, org)
    assert (issue.stripe_object_id, issue.amount_cents) == (dispute_id, 2500)
    assert "fraudulent" in issue.detail
    [message] = mail.outbox
    assert "Dispute" in message.subject and sorted(message.to) == ["billing-ops@example.com", "owner@alice.test"]
    assert dispute_id in message.body and "fraudulent" in message.body
    assert balance(org) == 25 * USD


def test_a_declined_checkout_payment_fails_the_payment_and_alerts_once(fake_stripe, org, committed):
    payment, _ = topup_session_create(organization=org, amount_micro=25 * USD, created_by=None,
                                      success_url="https://app.example.com/ok", cancel_url="https://app.example.com/")
    event = fake_stripe.fail_checkout_payment(payment.stripe_checkout_session_id)
    assert event["type"] == "payment_intent.payment_failed"
    with committed():
        deliver(event)
        deliver({**event, "id": event["id"] + "_resent"})
    payment.refresh_from_db()
    assert (payment.status, payment.failure_message) == ("failed", "Your card was declined.")
    issue = PaymentIssue.objects.get()
    assert (issue.kind, issue.payment, issue.amount_cents) == ("payment_failed", payment, 2500)
    assert issue.stripe_object_id == event["data"]["object"]["id"] and "generic_decline" in issue.detail
    [message] = mail.outbox
    assert "Payment Failed" in message.subject and "owner@alice.test" in message.to
    assert balance(org) == 0

    # The customer tries another card in the same Checkout: it is paid after all.
    deliver(fake_stripe.complete_checkout(payment.stripe_checkout_session_id))
    payment.refresh_from_db()
    assert (payment.status, payment.failure_message, balance(org)) == ("succeeded", "", 25 * USD)
