"""Reads from accounts."""
from accounts.models import APIKey, key_digest


def api_key_for_secret(secret: str) -> APIKey | None:
    """The usable key (with its organization) for this secret, or None (unknown, revoked or expired).

    Only reads: accounts.auth checks the secret's shape and size first and records the key's use.
    """
    key = APIKey.objects.select_related("organization").filter(digest=key_digest(secret)).first()
    if key is None or not key.matches(secret) or not key.is_usable():
        return None
    return key
