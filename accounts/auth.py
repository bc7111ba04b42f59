"""API-key authentication: the one parser of `Authorization: Bearer KEY` for every surface.

/v1 (inference.api.auth), /api and the billing API (accounts.api.authentication) adapt `authenticate` to
their framework; each answers a `KeyRejected` (an APIError: 401, the code `invalid_api_key`) with its message.

The order is the cheap checks first: the header's shape, then the secret's prefix and size, and only then
its digest is computed and looked up, so an oversized or malformed header costs no hashing and no query.
"""
from accounts import selectors, services
from accounts.models import APIKey, KEY_PREFIX
from core.errors import INVALID_API_KEY, NO_KEY, APIError

SCHEMES = ("bearer", "api-key")
# Secrets are KEY_PREFIX and 43 characters; anything much longer is refused before it is hashed.
MAX_SECRET_LENGTH = 200

MALFORMED = "Malformed Authorization header: expected 'Bearer YOUR_KEY'."

# The OpenAPI security scheme of every endpoint that takes a key (/v1, /api/sessions, /api/billing).
SECURITY_SCHEME = "ApiKeyAuth"
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "An organization's API key (`sk-...`): `Authorization: Bearer KEY` "
                   "(`Authorization: Api-Key KEY` works too).",
}


class KeyRejected(APIError):
    """No usable API key in the request: 401 with the code `invalid_api_key`."""

    def __init__(self, message: str):
        super().__init__(401, message, code=INVALID_API_KEY)


class KeyMissing(KeyRejected):
    """No Authorization header at all (a surface that also takes a signed-in session may go on without one)."""

    def __init__(self):
        super().__init__(NO_KEY)


def unknown_key(secret: str) -> str:
    shown = secret[:7] + "…" if len(secret) > 7 else "…"
    return f"Incorrect API key provided: {shown}. The key is unknown, revoked or expired."


def secret_from(header: str | None) -> str:
    """The secret of an `Authorization: Bearer KEY` (or `Api-Key KEY`) header; KeyMissing without a header,
    KeyRejected when it is not of that shape."""
    if not header:
        raise KeyMissing()
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() not in SCHEMES or not secret:
        raise KeyRejected(MALFORMED)
    return secret


def well_formed(secret: str) -> bool:
    """Whether the secret could be a key at all: checked before it is hashed."""
    return bool(secret) and secret.startswith(KEY_PREFIX) and len(secret) <= MAX_SECRET_LENGTH


def api_key_authenticate(secret: str) -> APIKey | None:
    """The usable key for this secret, or None (malformed, unknown, revoked or expired); records its use."""
    if not well_formed(secret):
        return None
    key = selectors.api_key_for_secret(secret)
    if key is not None:
        services.api_key_record_use(key=key)
    return key


def key_for(secret: str) -> APIKey:
    """The usable key of a secret taken from a header by `secret_from`; KeyRejected otherwise."""
    key = api_key_authenticate(secret)
    if key is None:
        raise KeyRejected(unknown_key(secret))
    return key


def authenticate(header: str | None) -> APIKey:
    """The usable key an Authorization header carries; KeyMissing or KeyRejected otherwise."""
    return key_for(secret_from(header))
