"""Reconciliation applies the events no webhook brought, once, through the webhook's own code path."""
import time

import pytest

from billing.models import LedgerEntry, Payment, StripeEvent
from billing.stripe.reconcile import reconcile_events
from billing.tasks.payments import reconcile_stripe
from tests.billing.fake_stripe import deliver
from tests.billing.money import USD, balance, checkout
from tests.factories import make_org

pytestmark = pytest.mark.money


@pytest.mark.django_db
def test_a_checkout_whose_webhook_never_came_is_credited_once(fake_stripe):
    org = make_org("alice")
    payment = checkout(org, 25)
    completed = fake_stripe.complete_checkout(payment.stripe_checkout_session_id)  # the webhook is lost

    first = reconcile_stripe()
    assert first["applied"] == 2 and first["failed"] == 0  # the payment intent and the session
    payment.refresh_from_db()
    assert (payment.status, payment.credited_micro) == ("succeeded", 25 * USD)
    assert balance(org) == 25 * USD
    assert StripeEvent.objects.get(event_id=completed["id"]).source == "reconcile"

    assert reconcile_stripe()["applied"] == 0
    assert deliver(completed).json()["duplicate"] is True  # the webhook, arriving late after all
    assert balance(org) == 25 * USD
    assert org.credit_account.entries.filter(kind=LedgerEntry.Kind.TOPUP).count() == 1


@pytest.mark.django_db
def test_it_asks_for_the_handled_types_of_recent_events_and_pages_through_them(fake_stripe):
    org = make_org("alice")
    payments = [checkout(org, usd) for usd in (10, 20, 30)]
    delivered = fake_stripe.complete_checkout(payments[0].stripe_checkout_session_id)
    deliver(delivered)
    for payment in payments[1:]:
        fake_stripe.complete_checkout(payment.stripe_checkout_session_id)

    result = reconcile_events(page_size=2)
    # charge.succeeded is not asked for; of the six handled events one came by webhook.
    assert result == {"fetched": 6, "applied": 5, "failed": 0}
    assert balance(org) == 60 * USD
    assert StripeEvent.objects.get(event_id=delivered["id"]).source == "webhook"
    pages = [params for method, path, params in fake_stripe.requests if path == "/v1/events"]
    assert len(pages) == 3 and all(p["limit"] == "2" for p in pages)
    assert "charge.succeeded" not in pages[0]["types"] and "charge.refunded" in pages[0]["types"]
    assert abs(int(pages[0]["created"]["gte"]) - (time.time() - 3 * 86400)) < 60


@pytest.mark.django_db
def test_a_lost_payment_and_its_lost_refund_are_applied_in_order(fake_stripe):
    org = make_org("alice")
    payment = checkout(org, 25)
    fake_stripe.complete_checkout(payment.stripe_checkout_session_id)
    intent = fake_stripe.of("payment_intent")[0]
    fake_stripe.refund(intent["latest_charge"], 1000)
    reconcile_stripe()
    payment.refresh_from_db()
    assert (payment.credited_micro, payment.refunded_cents, payment.clawed_back_micro) == (25 * USD, 1000, 10 * USD)
    assert balance(org) == 15 * USD


@pytest.mark.django_db
def test_events_older_than_the_window_are_left_alone(fake_stripe):
    org = make_org("alice")
    payment = checkout(org, 25)
    fake_stripe.complete_checkout(payment.stripe_checkout_session_id)
    for event in fake_stripe.events:
        event["created"] -= 10 * 86400
    assert reconcile_stripe() == {"fetched": 0, "applied": 0, "failed": 0}
    assert balance(org) == 0 and Payment.objects.get().status == "pending"


@pytest.mark.django_db
def test_without_stripe_it_does_nothing(settings):
    settings.STRIPE_SECRET_KEY = None
    assert reconcile_stripe()["skipped"] == "not configured"


@pytest.mark.django_db
def test_stripe_out_of_reach_is_reported_not_raised(fake_stripe):
    fake_stripe.stop()
    result = reconcile_stripe()
    assert result["applied"] == 0 and "Stripe" in result["error"]
    assert not StripeEvent.objects.exists()
