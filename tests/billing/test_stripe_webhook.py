import threading
import time

import pytest
from django.db import connection
from django.test import Client

from billing.models import BillingProfile, LedgerEntry, Payment, StripeEvent
from tests.billing.fake_stripe import WEBHOOK_URL, deliver, signature, signed
from tests.billing.money import USD, balance, checkout
from tests.factories import make_org

pytestmark = pytest.mark.money


def post(body: bytes, header: str | None):
    headers = {} if header is None else {"HTTP_STRIPE_SIGNATURE": header}
    return Client().post(WEBHOOK_URL, data=body, content_type="application/json", **headers)


@pytest.mark.django_db
def test_a_paid_checkout_credits_the_organization_and_saves_its_card(fake_stripe):
    org = make_org("alice", credit_micro=3 * USD)
    payment = checkout(org, 25)
    event = fake_stripe.complete_checkout(payment.stripe_checkout_session_id, payment_method="pm_card_mastercard")

    response = deliver(event)
    assert response.status_code == 200
    assert response.json() == {"received": True, "id": event["id"], "type": "checkout.session.completed",
                               "duplicate": False}
    intent = fake_stripe.of("payment_intent")[0]
    payment.refresh_from_db()
    assert (payment.status, payment.credited_micro, payment.amount_cents) == ("succeeded", 25 * USD, 2500)
    assert (payment.stripe_payment_intent_id, payment.stripe_charge_id) == (intent["id"], intent["latest_charge"])
    entry = org.credit_account.entries.first()
    assert (entry.kind, entry.amount_micro, entry.reference) == ("topup", 25 * USD, intent["id"])
    assert BillingProfile.objects.get(organization=org).stripe_payment_method_id == "pm_card_mastercard"
    assert balance(org) == 28 * USD
    assert StripeEvent.objects.get(event_id=event["id"]).source == "webhook"


@pytest.mark.django_db
def test_replays_and_the_payment_intent_event_credit_nothing_more(fake_stripe):
    org = make_org("alice")
    payment = checkout(org, 25)
    completed = fake_stripe.complete_checkout(payment.stripe_checkout_session_id)
    deliver(completed)
    replay = deliver(completed)
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    intent_event = fake_stripe.event_of("payment_intent.succeeded", fake_stripe.of("payment_intent")[0]["id"])
    assert deliver(intent_event).json()["duplicate"] is False
    assert balance(org) == 25 * USD
    assert org.credit_account.entries.filter(kind=LedgerEntry.Kind.TOPUP).count() == 1


@pytest.mark.django_db
def test_the_payment_intent_event_arriving_first_credits_once_and_saves_the_card(fake_stripe):
    org = make_org("alice")
    payment = checkout(org, 40)
    completed = fake_stripe.complete_checkout(payment.stripe_checkout_session_id, payment_method="pm_card_amex")
    intent_event = fake_stripe.event_of("payment_intent.succeeded", completed["data"]["object"]["payment_intent"])
    deliver(intent_event)
    assert balance(org) == 40 * USD
    assert BillingProfile.objects.get(organization=org).stripe_payment_method_id == "pm_card_amex"
    deliver(completed)
    assert balance(org) == 40 * USD
    assert Payment.objects.get(pk=payment.pk).status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_one_event_delivered_ten_times_at_once_credits_once(fake_stripe):
    org = make_org("alice")
    payment = checkout(org, 25)
    event = fake_stripe.complete_checkout(payment.stripe_checkout_session_id)
    body, header = signed(event)
    workers = 10
    barrier = threading.Barrier(workers)
    answers = []

    def attempt():
        try:
            barrier.wait()
            response = post(body, header)
            answers.append((response.status_code, response.json()["duplicate"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [(200, False)] + [(200, True)] * (workers - 1)
    assert balance(org) == 25 * USD
    assert org.credit_account.entries.filter(kind="topup").count() == 1
    assert StripeEvent.objects.filter(event_id=event["id"]).count() == 1
    assert Payment.objects.get(pk=payment.pk).credited_micro == 25 * USD


def _tampered(event):
    body, header = signed(event)
    return body.replace(b'"amount_total": 2500', b'"amount_total": 250000'), header


@pytest.mark.django_db
@pytest.mark.parametrize("forge, code, says", [
    (lambda e: signed(e, secret="whsec_someone_else"), "invalid_signature", "No signatures found matching"),
    (lambda e: (signed(e)[0], None), "invalid_signature", "No Stripe-Signature header"),
    (lambda e: (signed(e)[0], "garbage"), "invalid_signature", "Unable to extract timestamp"),
    (lambda e: signed(e, timestamp=int(time.time()) - 600), "invalid_signature", "Timestamp outside the tolerance"),
    (_tampered, "invalid_signature", "No signatures found matching"),
    (lambda e: (b"{not json", signed(e)[1]), "invalid_signature", "No signatures found matching"),
])
def test_a_forged_stale_or_unsigned_event_is_refused_and_changes_nothing(fake_stripe, forge, code, says):
    org = make_org("alice")
    payment = checkout(org, 25)
    body, header = forge(fake_stripe.complete_checkout(payment.stripe_checkout_session_id))
    response = post(body, header)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, None)
    assert says in error["message"]
    assert not StripeEvent.objects.exists()
    assert Payment.objects.get(pk=payment.pk).status == "pending" and balance(org) == 0


@pytest.mark.django_db
@pytest.mark.parametrize("body, says", [
    (b"{not json", "Expecting property name"),
    (b"\xff\xfe{}", "can't decode"),
    (b"[1, 2]", "has no attribute"),
    (b'{"id": "evt_1", "object": "event"}', "has no type or data.object"),
    (b'{"type": "charge.refunded", "data": {"object": {}}}', "no event id"),
])
def test_a_signed_body_that_is_not_an_event_is_refused(fake_stripe, body, says):
    response = post(body, signature(body))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_payload" and says in response.json()["error"]["message"]
    assert not StripeEvent.objects.exists()


@pytest.mark.django_db
def test_without_a_webhook_secret_the_webhook_is_unavailable(fake_stripe, settings):
    settings.STRIPE_WEBHOOK_SECRET = None
    org = make_org("alice")
    payment = checkout(org, 25)
    response = deliver(fake_stripe.complete_checkout(payment.stripe_checkout_session_id))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "webhook_not_configured"
    assert "STRIPE_WEBHOOK_SECRET" in response.json()["error"]["message"]
    assert balance(org) == 0 and not StripeEvent.objects.exists()


@pytest.mark.django_db
def test_only_post_is_allowed(fake_stripe):
    response = Client().get(WEBHOOK_URL)
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.django_db
def test_an_unhandled_event_type_is_acknowledged_and_recorded(fake_stripe):
    event = {"id": "evt_unhandled", "object": "event", "type": "customer.updated", "created": int(time.time()),
             "data": {"object": {"id": "cus_1", "object": "customer"}}}
    assert deliver(event).json() == {"received": True, "id": "evt_unhandled", "type": "customer.updated",
                                     "duplicate": False}
    assert StripeEvent.objects.get(event_id="evt_unhandled").type == "customer.updated"
    assert deliver(event).json()["duplicate"] is True


@pytest.mark.django_db
def test_an_expired_checkout_fails_its_payment(fake_stripe):
    org = make_org("alice")
    payment = checkout(org, 25)
    session = fake_stripe.of("checkout.session")[0] | {"status": "expired"}
    event = {"id": "evt_expired", "object": "event", "type": "checkout.session.expired", "created": int(time.time()),
             "data": {"object": session}}
    assert deliver(event).status_code == 200
    payment.refresh_from_db()
    assert payment.status == "failed" and "expired" in payment.failure_message
    assert balance(org) == 0


@pytest.mark.django_db
def test_a_paid_session_no_payment_answers_to_is_recorded_without_credit(fake_stripe):
    org = make_org("alice")
    payment = checkout(org, 25)
    event = fake_stripe.complete_checkout(payment.stripe_checkout_session_id)
    event["data"]["object"].update(id="cs_test_elsewhere", metadata={})
    assert deliver(event).status_code == 200
    assert StripeEvent.objects.filter(event_id=event["id"]).exists()
    assert balance(org) == 0 and Payment.objects.get(pk=payment.pk).status == "pending"
