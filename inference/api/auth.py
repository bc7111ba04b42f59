"""API-key authentication for the /v1 endpoints."""
from asgiref.sync import sync_to_async

from accounts.models import APIKey
from accounts.selectors import api_key_authenticate
from inference.api.errors import unauthorized

_SCHEMES = ("bearer", "api-key")


def _secret_from(header: str) -> str | None:
    scheme, _, secret = header.strip().partition(" ")
    if scheme.lower() not in _SCHEMES:
        return None
    return secret.strip() or None


async def authenticate(request) -> APIKey:
    header = request.headers.get("Authorization")
    if not header:
        raise unauthorized(
            "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'."
        )
    secret = _secret_from(header)
    if secret is None:
        raise unauthorized("Malformed Authorization header: expected 'Bearer YOUR_KEY'.")
    key = await sync_to_async(api_key_authenticate)(secret)
    if key is None:
        shown = secret[:7] + "…" if len(secret) > 7 else "…"
        raise unauthorized(f"Incorrect API key provided: {shown}. The key is unknown, revoked or expired.")
    return key
