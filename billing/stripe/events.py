"""Stripe events applied to payments and the ledger, each exactly once.

The webhook and reconciliation both come through event_apply. The StripeEvent row is inserted in the
same transaction as the event's effects: a duplicate delivery, concurrent or late, fails on the
unique event id and changes nothing, and an event whose effects failed is not recorded, so Stripe's
retry (or the next reconciliation) applies it again. Reads from the Stripe API happen before the
transaction, so no database lock is held across a network call.
"""
import logging

import stripe
from django.db import IntegrityError, transaction

from billing import metrics
from billing.models import MICRO_USD, CreditAccount, LedgerEntry, Payment, PaymentIssue, StripeEvent
from billing.services import account_for, ledger_post
from billing.stripe.client import StripeNotConfigured, object_id, stripe_client
from core.money import MICRO_PER_CENT
from billing.stripe.payments import (
    issue_open, payment_credit, payment_fail, payment_find, payment_ids_record, payment_method_save,
)

log = logging.getLogger(__name__)


def event_parse(data) -> dict:
    """The event as a plain dict, or ValueError when it does not have the shape of a Stripe event."""
    if hasattr(data, "to_dict"):
        data = data.to_dict()
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ValueError("not a Stripe event: no event id")
    if not isinstance(data.get("type"), str) or not isinstance((data.get("data") or {}).get("object"), dict):
        raise ValueError(f"Stripe event {data['id']} has no type or data.object")
    return data


def _intent_of_session(session: dict) -> dict:
    """The session's payment intent (its saved card and charge), or {} when Stripe cannot be read now."""
    intent_id = object_id(session.get("payment_intent"))
    if session.get("payment_status") != "paid" or not intent_id:
        return {}
    try:
        return stripe_client().v1.payment_intents.retrieve(intent_id).to_dict()
    except (stripe.StripeError, StripeNotConfigured) as exc:
        # The credit does not wait for it; payment_intent.succeeded carries the card too.
        log.warning("payment intent %s not read: %s", intent_id, exc)
        return {}


def _checkout_paid(session: dict, intent: dict) -> None:
    if session.get("payment_status") != "paid":
        return  # a delayed payment method: checkout.session.async_payment_succeeded follows
    payment = payment_find(session_id=session["id"], metadata=session.get("metadata"))
    if payment is None:
        log.warning("paid Checkout session %s matches no payment", session["id"])
        return
    intent_id = object_id(session.get("payment_intent"))
    payment_credit(payment, amount_cents=int(session.get("amount_total") or 0), intent_id=intent_id,
                   charge_id=object_id(intent.get("latest_charge")))
    payment_method_save(organization_id=payment.organization_id,
                        payment_method_id=object_id(intent.get("payment_method")))


def _checkout_expired(session: dict, _context: dict) -> None:
    payment = payment_find(session_id=session["id"], metadata=session.get("metadata"))
    if payment is not None:
        payment_fail(payment, message="The Checkout session expired before it was paid.")


def _intent_succeeded(intent: dict, _context: dict) -> None:
    payment = payment_find(intent_id=intent["id"], metadata=intent.get("metadata"))
    if payment is None:
        log.warning("succeeded payment intent %s matches no payment", intent["id"])
        return
    amount = int(intent.get("amount_received") or intent.get("amount") or 0)
    payment_credit(payment, amount_cents=amount, intent_id=intent["id"],
                   charge_id=object_id(intent.get("latest_charge")))
    if intent.get("setup_future_usage") == "off_session":
        payment_method_save(organization_id=payment.organization_id,
                            payment_method_id=object_id(intent.get("payment_method")))


def _intent_failed(intent: dict, _context: dict) -> None:
    error = intent.get("last_payment_error") or {}
    message = error.get("message") or "The payment failed."
    payment = payment_find(intent_id=intent["id"], metadata=intent.get("metadata"))
    if payment is not None:
        payment_fail(payment, message=message, intent_id=intent["id"])
    code = error.get("decline_code") or error.get("code") or "unknown"
    issue_open(kind=PaymentIssue.Kind.PAYMENT_FAILED, payment=payment, stripe_object_id=intent["id"],
               amount_cents=int(intent.get("amount") or 0), detail=f"{message} ({code})", once=True)


def _charge_refunded(charge: dict, _context: dict) -> None:
    """Claw back the credit bought by the newly refunded part (amount_refunded is cumulative)."""
    intent_id = object_id(charge.get("payment_intent"))
    payment = payment_find(charge_id=charge["id"], intent_id=intent_id, metadata=charge.get("metadata"))
    if payment is None:
        log.warning("refunded charge %s matches no payment", charge["id"])
        return
    payment_ids_record(payment, intent_id=intent_id, charge_id=charge["id"])
    refunded_cents = min(int(charge.get("amount_refunded") or 0), payment.amount_cents)
    new_cents = refunded_cents - payment.refunded_cents
    if new_cents <= 0:
        return  # a replay, or an older event arriving after a newer one
    owed = max(0, min(new_cents * MICRO_PER_CENT, payment.credited_micro - payment.clawed_back_micro))
    account = CreditAccount.objects.select_for_update().get(pk=account_for(organization=payment.organization).pk)
    taken = max(0, min(owed, account.available_micro))
    if taken:
        ledger_post(organization=payment.organization, kind=LedgerEntry.Kind.CLAWBACK, amount_micro=-taken,
                    description=f"Stripe refund of {new_cents / 100:,.2f} (charge {charge['id']})",
                    reference=intent_id or charge["id"])
    Payment.objects.filter(pk=payment.pk).update(
        refunded_cents=refunded_cents, clawed_back_micro=payment.clawed_back_micro + taken,
    )
    shortfall = owed - taken
    if shortfall:
        issue_open(
            kind=PaymentIssue.Kind.REFUND_SHORTFALL, payment=payment, stripe_object_id=charge["id"],
            amount_cents=-(-shortfall // MICRO_PER_CENT),
            detail=(f"A refund of {new_cents / 100:,.2f} should take back {owed / MICRO_USD:,.6f} USD of credit, "
                    f"but only {taken / MICRO_USD:,.6f} USD was available; "
                    f"{shortfall / MICRO_USD:,.6f} USD was not taken back."),
        )


def _dispute_created(dispute: dict, _context: dict) -> None:
    payment = payment_find(charge_id=object_id(dispute.get("charge")),
                           intent_id=object_id(dispute.get("payment_intent")))
    amount = int(dispute.get("amount") or 0)
    issue_open(
        kind=PaymentIssue.Kind.DISPUTE, payment=payment, stripe_object_id=dispute.get("id", ""), amount_cents=amount,
        detail=(f"The cardholder disputed {amount / 100:,.2f} of charge {object_id(dispute.get('charge'))} "
                f"(reason: {dispute.get('reason') or 'unknown'}, status: {dispute.get('status') or 'unknown'}). "
                "Answer it in the Stripe dashboard before the evidence is due."),
    )


HANDLERS = {
    "checkout.session.completed": _checkout_paid,
    "checkout.session.async_payment_succeeded": _checkout_paid,
    "checkout.session.expired": _checkout_expired,
    "payment_intent.succeeded": _intent_succeeded,
    "payment_intent.payment_failed": _intent_failed,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
}
_PREFETCH = {
    "checkout.session.completed": _intent_of_session,
    "checkout.session.async_payment_succeeded": _intent_of_session,
}


def event_apply(*, event: dict, source: str = "webhook") -> bool:
    """Apply the event's effects and record it; False when it had been applied already."""
    if StripeEvent.objects.filter(event_id=event["id"]).exists():
        return False
    obj = event["data"]["object"]
    handler = HANDLERS.get(event["type"])
    prefetch = _PREFETCH.get(event["type"])
    context = prefetch(obj) if prefetch else {}
    with transaction.atomic():
        try:
            with transaction.atomic():
                StripeEvent.objects.create(event_id=event["id"], type=event["type"][:100], source=source)
        except IntegrityError:
            return False  # another delivery of the same event got there first
        if handler is not None:
            handler(obj, context)
    metrics.stripe_event_applied(event_type=event["type"], source=source)
    return True
