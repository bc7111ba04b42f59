"""The configured Stripe API client (STRIPE_SECRET_KEY, and STRIPE_API_BASE to point it at another server)."""
from functools import lru_cache

import stripe
from django.conf import settings



class StripeNotConfigured(RuntimeError):
    """Payments are off on this server: STRIPE_SECRET_KEY is unset."""


@lru_cache(maxsize=4)
def _client(api_key: str, api_base: str | None) -> stripe.StripeClient:
    # The library retries network errors and 409/5xx answers with the same idempotency key.
    return stripe.StripeClient(api_key, base_addresses={"api": api_base} if api_base else None, max_network_retries=2)


def stripe_client() -> stripe.StripeClient:
    if not settings.STRIPE_SECRET_KEY:
        raise StripeNotConfigured("Payments are not configured on this server (STRIPE_SECRET_KEY is unset).")
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE or None)


def stripe_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def object_id(value) -> str:
    """The id of a field Stripe answers either as an id or as the expanded object; "" when absent."""
    if isinstance(value, dict):
        return value.get("id") or ""
    return value or ""
