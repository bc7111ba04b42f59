"""Top-ups through Stripe Checkout: a pending Payment and the Checkout page that pays it.

Nothing is credited here: the Payment is credited when Stripe reports the session paid (billing.stripe.events).
The card is saved for off-session use, so that auto-recharge can charge it later.
"""
import logging

import stripe
from django.conf import settings

from accounts.models import Organization
from billing.models import MICRO_USD, Payment
from billing.stripe.client import stripe_client
from billing.stripe.customers import customer_for
from core.money import MICRO_PER_CENT

log = logging.getLogger(__name__)


class TopupAmountInvalid(ValueError):
    """The amount is not whole cents within TOPUP_MIN_USD..TOPUP_MAX_USD."""


class CheckoutFailed(Exception):
    """Stripe refused the Checkout session or could not be reached; the Payment is marked failed."""


def topup_cents(amount_micro: int) -> int:
    """The amount in cents, or TopupAmountInvalid saying what is allowed."""
    low, high = settings.TOPUP_MIN_USD, settings.TOPUP_MAX_USD
    allowed = f"a top-up must be whole cents between ${low:,.2f} and ${high:,.2f}"
    if isinstance(amount_micro, bool) or not isinstance(amount_micro, int):
        raise TopupAmountInvalid(f"{allowed}; got {amount_micro!r}")
    if amount_micro % MICRO_PER_CENT:
        raise TopupAmountInvalid(f"{allowed}; ${amount_micro / MICRO_USD:,.6f} has fractions of a cent")
    if not low * MICRO_USD <= amount_micro <= high * MICRO_USD:
        raise TopupAmountInvalid(f"{allowed}; got ${amount_micro / MICRO_USD:,.2f}")
    return amount_micro // MICRO_PER_CENT


def topup_session_create(
    *, organization: Organization, amount_micro: int, created_by, success_url: str, cancel_url: str,
) -> tuple[Payment, str]:
    """A pending Checkout Payment and the URL of the Stripe page that pays it.

    Raises TopupAmountInvalid, StripeNotConfigured, or CheckoutFailed when Stripe does not create the session.
    """
    cents = topup_cents(amount_micro)
    client = stripe_client()
    currency = settings.STRIPE_CURRENCY
    try:
        customer_id = customer_for(organization=organization)
    except stripe.StripeError as exc:
        log.warning("Stripe customer for %s not created: %s", organization, exc)
        raise CheckoutFailed(f"Stripe could not create the customer: {exc.user_message or exc}") from exc
    payment = Payment.objects.create(
        organization=organization, kind=Payment.Kind.CHECKOUT, amount_cents=cents, currency=currency,
        created_by=created_by,
    )
    metadata = {"organization_id": str(organization.pk), "payment_id": str(payment.pk), "kind": payment.kind}
    try:
        session = client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "customer": customer_id,
                "client_reference_id": str(payment.pk),
                "line_items": [{
                    "quantity": 1,
                    "price_data": {
                        "currency": currency,
                        "unit_amount": cents,
                        "product_data": {"name": f"Credit top-up for {organization.name}"},
                    },
                }],
                "payment_intent_data": {"setup_future_usage": "off_session", "metadata": metadata},
                "metadata": metadata,
                "success_url": success_url,
                "cancel_url": cancel_url,
            },
            options={"idempotency_key": f"checkout-payment-{payment.pk}"},
        )
    except stripe.StripeError as exc:
        message = f"Stripe could not create the Checkout session: {exc.user_message or exc}"
        Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.FAILED, failure_message=message[:500])
        log.warning("checkout for payment %s failed: %s", payment.pk, exc)
        raise CheckoutFailed(message) from exc
    payment.stripe_checkout_session_id = session.id
    payment.save(update_fields=["stripe_checkout_session_id", "updated_at"])
    return payment, session.url
