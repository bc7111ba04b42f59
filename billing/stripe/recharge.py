"""Auto-recharge: charge the saved card off-session when the balance falls under the threshold.

billing.triggers queues this at most once per threshold crossing. The Payment row is written before
Stripe is asked, and its id is the idempotency key, so a retried request can never charge twice; the
credit goes through payment_credit, so the task's own answer and the payment_intent.succeeded webhook
credit it once between them.
"""
import logging

import stripe
from django.conf import settings
from django.db import transaction

from billing.models import BillingProfile, Payment, PaymentIssue
from billing.services import account_for
from billing.stripe.checkout import TopupAmountInvalid, topup_cents
from billing.stripe.client import object_id, stripe_client, stripe_configured
from billing.stripe.payments import issue_open, payment_credit, payment_fail, payment_find, payment_ids_record
from core.money import MICRO_PER_CENT

log = logging.getLogger(__name__)


@transaction.atomic
def _failed(payment: Payment, *, message: str, intent_id: str = "", code: str = "") -> None:
    payment = payment_find(intent_id=intent_id, metadata={
        "payment_id": payment.pk, "organization_id": payment.organization_id,
    }) or payment
    payment_fail(payment, message=message, intent_id=intent_id)
    issue_open(kind=PaymentIssue.Kind.PAYMENT_FAILED, payment=payment, stripe_object_id=intent_id,
               amount_cents=payment.amount_cents, once=True,
               detail=f"Auto-recharge failed: {message}" + (f" ({code})" if code else ""))


def _cannot_charge(profile: BillingProfile, reason: str) -> None:
    log.warning("auto-recharge of %s skipped: %s", profile.organization, reason)
    issue_open(kind=PaymentIssue.Kind.PAYMENT_FAILED, organization=profile.organization,
               amount_cents=profile.auto_recharge_amount_micro // MICRO_PER_CENT, detail=f"Auto-recharge skipped: {reason}")


def auto_recharge_run(*, organization_id: int) -> str:
    """Charge the organization's auto-recharge amount; says what happened (for the log and the task result)."""
    profile = BillingProfile.objects.select_related("organization").filter(organization_id=organization_id).first()
    if profile is None or not profile.auto_recharge_enabled:
        log.info("auto-recharge of organization %s skipped: it is off", organization_id)
        return "disabled"
    if not stripe_configured():
        log.warning("auto-recharge of organization %s skipped: Stripe is not configured", organization_id)
        return "not_configured"
    if not profile.stripe_customer_id or not profile.stripe_payment_method_id:
        _cannot_charge(profile, "no card is saved. A top-up through Checkout saves the card it is paid with.")
        return "no_card"
    try:
        cents = topup_cents(profile.auto_recharge_amount_micro)
    except TopupAmountInvalid as exc:
        _cannot_charge(profile, f"the auto-recharge amount is invalid: {exc}")
        return "invalid_amount"
    organization = profile.organization
    if account_for(organization=organization).available_micro >= profile.auto_recharge_threshold_micro:
        # Credited since the crossing (a top-up while this waited in the queue): nothing to do; armed again.
        BillingProfile.objects.filter(pk=profile.pk).update(auto_recharge_armed=True)
        return "not_needed"
    payment = Payment.objects.create(organization=organization, kind=Payment.Kind.AUTO_RECHARGE, amount_cents=cents,
                                     currency=settings.STRIPE_CURRENCY)
    metadata = {"organization_id": str(organization.pk), "payment_id": str(payment.pk), "kind": payment.kind}
    try:
        intent = stripe_client().v1.payment_intents.create(
            params={
                "amount": cents, "currency": settings.STRIPE_CURRENCY, "customer": profile.stripe_customer_id,
                "payment_method": profile.stripe_payment_method_id, "off_session": True, "confirm": True,
                "description": f"Auto-recharge for {organization.name}", "metadata": metadata,
            },
            options={"idempotency_key": f"auto-recharge-payment-{payment.pk}"},
        ).to_dict()
    except stripe.CardError as exc:
        # Declined, or the bank wants the cardholder present (authentication_required).
        failed_intent = ((exc.json_body or {}).get("error") or {}).get("payment_intent")
        _failed(payment, message=exc.user_message or str(exc), intent_id=object_id(failed_intent), code=exc.code or "")
        return "failed"
    except stripe.StripeError as exc:
        # If Stripe did charge, its payment_intent.succeeded event still credits this Payment.
        _failed(payment, message=f"Stripe could not be asked to charge the card: {exc.user_message or exc}")
        return "failed"
    if intent.get("status") == "succeeded":
        payment_credit(payment, amount_cents=int(intent.get("amount_received") or cents), intent_id=intent["id"],
                       charge_id=object_id(intent.get("latest_charge")))
        return "succeeded"
    payment_ids_record(payment, intent_id=intent["id"])
    if intent.get("status") == "processing":
        return "processing"  # payment_intent.succeeded credits it
    _failed(payment, message=f"The payment was not completed (status {intent.get('status')}).",
            intent_id=intent["id"])
    return "failed"
