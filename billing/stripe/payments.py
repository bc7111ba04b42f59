"""What a Stripe outcome does to a Payment and the ledger, each step safe to repeat.

A Payment is credited at most once whichever report arrives first (the webhook of its Checkout
session, of its payment intent, reconciliation, or the auto-recharge task's own answer): the
conditional update that claims it and the ledger entry commit together.
"""
import logging

from django.db import transaction

from billing.models import BillingProfile, LedgerEntry, Payment, PaymentIssue
from billing.notify import notify_payment_issue
from billing.services import ledger_post
from core.money import MICRO_PER_CENT

log = logging.getLogger(__name__)


def payment_find(*, session_id: str = "", intent_id: str = "", charge_id: str = "", metadata=None) -> Payment | None:
    """The Payment a Stripe object answers to (locked), by its ids, else by the payment_id in its metadata."""
    rows = Payment.objects.select_for_update()
    for field, value in (("stripe_checkout_session_id", session_id), ("stripe_payment_intent_id", intent_id),
                         ("stripe_charge_id", charge_id)):
        if value:
            payment = rows.filter(**{field: value}).first()
            if payment is not None:
                return payment
    metadata = metadata or {}
    payment_id, organization_id = str(metadata.get("payment_id", "")), str(metadata.get("organization_id", ""))
    if payment_id.isdigit() and organization_id.isdigit():
        return rows.filter(pk=int(payment_id), organization_id=int(organization_id)).first()
    return None


def payment_ids_record(payment: Payment, *, intent_id: str = "", charge_id: str = "") -> None:
    """Fill in the payment intent and charge ids the Payment does not have yet."""
    if intent_id and not payment.stripe_payment_intent_id:
        Payment.objects.filter(pk=payment.pk, stripe_payment_intent_id=None).update(stripe_payment_intent_id=intent_id)
    if charge_id and not payment.stripe_charge_id:
        Payment.objects.filter(pk=payment.pk, stripe_charge_id="").update(stripe_charge_id=charge_id)


@transaction.atomic
def payment_credit(payment: Payment, *, amount_cents: int, intent_id: str, charge_id: str = "") -> bool:
    """Credit what Stripe collected for the Payment and mark it succeeded; False if it was credited before."""
    payment_ids_record(payment, intent_id=intent_id, charge_id=charge_id)
    if amount_cents <= 0:
        log.error("payment %s reported paid with %s cents; nothing credited", payment.pk, amount_cents)
        return False
    credit = amount_cents * MICRO_PER_CENT
    # The intent that succeeded, rather than an earlier one that failed.
    paid_by = {"stripe_payment_intent_id": intent_id} if intent_id else {}
    claimed = Payment.objects.filter(pk=payment.pk, credited_micro=0).update(
        status=Payment.Status.SUCCEEDED, credited_micro=credit, amount_cents=amount_cents, failure_message="",
        **paid_by,
    )
    if not claimed:
        return False
    label = "auto-recharge" if payment.kind == Payment.Kind.AUTO_RECHARGE else "top-up"
    ledger_post(
        organization=payment.organization, kind=LedgerEntry.Kind.TOPUP, amount_micro=credit,
        description=f"Stripe {label} (payment {payment.pk})", created_by=payment.created_by, reference=intent_id,
    )
    # Webhooks come in any order: a refund recorded before this credit is taken back now.
    refunded_cents = Payment.objects.values_list("refunded_cents", flat=True).get(pk=payment.pk)
    if refunded_cents:
        owed = min(refunded_cents * MICRO_PER_CENT, credit)
        ledger_post(organization=payment.organization, kind=LedgerEntry.Kind.CLAWBACK, amount_micro=-owed,
                    description=f"Stripe refund of {refunded_cents / 100:,.2f} recorded before the payment",
                    reference=intent_id)
        Payment.objects.filter(pk=payment.pk).update(clawed_back_micro=owed)
    return True


def payment_fail(payment: Payment, *, message: str, intent_id: str = "") -> bool:
    """Mark a pending Payment failed with Stripe's message; False if it had already succeeded or failed."""
    payment_ids_record(payment, intent_id=intent_id)
    return bool(Payment.objects.filter(pk=payment.pk, status=Payment.Status.PENDING).update(
        status=Payment.Status.FAILED, failure_message=message[:500],
    ))


def payment_method_save(*, organization_id: int, payment_method_id: str) -> None:
    """Keep the card a Checkout saved for off-session use: auto-recharge charges it."""
    if payment_method_id:
        profile, _ = BillingProfile.objects.get_or_create(organization_id=organization_id)
        BillingProfile.objects.filter(pk=profile.pk).update(stripe_payment_method_id=payment_method_id)


def issue_open(*, kind: str, organization=None, payment: Payment | None = None, stripe_object_id: str = "",
               amount_cents: int = 0, detail: str = "", once: bool = False) -> PaymentIssue | None:
    """Record an issue and email it once the transaction commits; with once, not again for the same object."""
    if once and stripe_object_id and PaymentIssue.objects.filter(kind=kind, stripe_object_id=stripe_object_id).exists():
        return None
    issue = PaymentIssue.objects.create(
        kind=kind, organization=organization or (payment.organization if payment else None), payment=payment,
        stripe_object_id=stripe_object_id, amount_cents=amount_cents, detail=detail[:500],
    )
    transaction.on_commit(lambda: notify_payment_issue(issue))
    return issue
