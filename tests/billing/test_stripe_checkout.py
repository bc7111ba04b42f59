import threading

import pytest
from django.db import connection

from accounts.models import User
from billing.models import BillingProfile, Payment
from billing.stripe.checkout import CheckoutFailed, TopupAmountInvalid, topup_session_create
from billing.stripe.client import StripeNotConfigured
from tests.billing.money import USD, balance
from tests.factories import make_org

pytestmark = pytest.mark.money


def topup(org, amount_micro=25 * USD, user=None, **urls):
    return topup_session_create(
        organization=org, amount_micro=amount_micro, created_by=user,
        success_url=urls.get("success_url", "https://app.example.com/billing?paid=1"),
        cancel_url=urls.get("cancel_url", "https://app.example.com/billing"),
    )


@pytest.mark.django_db
def test_a_topup_opens_a_checkout_session_for_a_pending_payment(fake_stripe):
    org = make_org("alice")
    user = User.objects.create_user("owner@alice.test")
    payment, url = topup(org, 25 * USD, user)

    session = fake_stripe.of("checkout.session")[0]
    assert url == session["url"] and url.startswith("https://checkout.stripe.com/")
    payment.refresh_from_db()
    assert (payment.kind, payment.status, payment.amount_cents) == ("checkout", "pending", 2500)
    assert payment.currency == "usd"
    assert (payment.stripe_checkout_session_id, payment.created_by, payment.credited_micro) == (session["id"], user, 0)
    customer = BillingProfile.objects.get(organization=org).stripe_customer_id
    assert customer.startswith("cus_") and session["customer"] == customer

    sent = next(params for method, path, params in fake_stripe.requests if path == "/v1/checkout/sessions")
    metadata = {"organization_id": str(org.pk), "payment_id": str(payment.pk), "kind": "checkout"}
    assert sent["mode"] == "payment" and sent["metadata"] == metadata
    assert sent["line_items"] == [{"quantity": "1", "price_data": {
        "currency": "usd", "unit_amount": "2500", "product_data": {"name": "Credit top-up for alice"}}}]
    assert sent["payment_intent_data"] == {"setup_future_usage": "off_session", "metadata": metadata}
    assert (sent["success_url"], sent["cancel_url"]) == ("https://app.example.com/billing?paid=1",
                                                         "https://app.example.com/billing")
    assert balance(org) == 0  # nothing is credited before Stripe says it is paid


@pytest.mark.django_db
def test_each_organization_gets_one_customer_whatever_it_tops_up(fake_stripe):
    alice, bob = make_org("alice"), make_org("bob")
    for org in (alice, bob, alice, bob, alice):
        topup(org)
    customers = fake_stripe.of("customer")
    assert sorted(c["metadata"]["organization_id"] for c in customers) == sorted([str(alice.pk), str(bob.pk)])
    for org in (alice, bob):
        recorded = BillingProfile.objects.get(organization=org).stripe_customer_id
        sessions = [s for s in fake_stripe.of("checkout.session") if s["metadata"]["organization_id"] == str(org.pk)]
        assert {s["customer"] for s in sessions} == {recorded}
    assert Payment.objects.filter(organization=alice).count() == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_topups_end_with_one_customer(fake_stripe):
    org = make_org("alice")
    workers = 6
    barrier = threading.Barrier(workers)
    errors = []

    def attempt():
        try:
            barrier.wait()
            topup(org)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(fake_stripe.of("customer")) == 1
    recorded = BillingProfile.objects.get(organization=org).stripe_customer_id
    assert {s["customer"] for s in fake_stripe.of("checkout.session")} == {recorded}
    assert Payment.objects.filter(organization=org, status="pending").count() == workers


@pytest.mark.django_db
@pytest.mark.parametrize("amount, why", [
    (4_990_000, "got $4.99"),
    (10_000 * USD + 10_000, "got $10,000.01"),
    (5 * USD + 1, "fractions of a cent"),
    (0, "got $0.00"),
    (-25 * USD, "got $-25.00"),
    (12.5, "got 12.5"),
    ("25000000", "got '25000000'"),
    (True, "got True"),
])
def test_an_amount_outside_the_bounds_is_refused_before_stripe_is_asked(fake_stripe, amount, why):
    org = make_org("alice")
    with pytest.raises(TopupAmountInvalid) as raised:
        topup(org, amount)
    assert isinstance(raised.value, ValueError)
    assert "whole cents between $5.00 and $10,000.00" in str(raised.value) and why in str(raised.value)
    assert not Payment.objects.exists() and fake_stripe.requests == []


@pytest.mark.django_db
def test_the_bounds_themselves_are_allowed(fake_stripe, settings):
    settings.TOPUP_MIN_USD, settings.TOPUP_MAX_USD = 7, 300
    org = make_org("alice")
    assert [topup(org, usd * USD)[0].amount_cents for usd in (7, 300)] == [700, 30_000]
    with pytest.raises(TopupAmountInvalid, match=r"between \$7.00 and \$300.00"):
        topup(org, 6_990_000)


@pytest.mark.django_db
def test_without_a_secret_key_payments_are_not_configured(settings):
    settings.STRIPE_SECRET_KEY = None
    with pytest.raises(StripeNotConfigured, match="STRIPE_SECRET_KEY"):
        topup(make_org("alice"))
    assert not Payment.objects.exists()


@pytest.mark.django_db
def test_a_session_stripe_refuses_fails_the_payment_with_its_reason(fake_stripe):
    org = make_org("alice")
    with pytest.raises(CheckoutFailed, match="Missing required param: success_url"):
        topup(org, success_url="")
    payment = Payment.objects.get()
    assert payment.status == "failed" and "success_url" in payment.failure_message
    assert balance(org) == 0


@pytest.mark.django_db
def test_stripe_out_of_reach_is_a_clear_error_and_no_payment(fake_stripe, settings):
    fake_stripe.stop()
    with pytest.raises(CheckoutFailed, match="Stripe could not create the customer"):
        topup(make_org("alice"))
    assert not Payment.objects.exists()
