"""Reads from accounts."""
from datetime import timedelta

from django.utils import timezone

from accounts.models import APIKey, KEY_PREFIX, key_digest

# Writing last_used_at on every request would turn each completion into a write;
# once a minute is as precise as anyone reads it.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_authenticate(secret: str) -> APIKey | None:
    """The usable key for this secret, or None (unknown, revoked or expired)."""
    if not secret or not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        return None
    key = APIKey.objects.select_related("organization").filter(digest=key_digest(secret)).first()
    if key is None or not key.matches(secret) or not key.is_usable():
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        APIKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
