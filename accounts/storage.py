"""What chat sessions may store: one message, one session, and all of an organization's sessions.

A message's size is the bytes of its normalised form as JSON (UTF-8), the same measure for the
API, the playground and the quota. The limits are settings (CHAT_SESSION_MESSAGE_MAX_BYTES,
CHAT_SESSION_MAX_BYTES, CHAT_SESSION_QUOTA_BYTES, or an organization's own quota); a refusal is a
StorageLimitExceeded naming the limit, raised before anything is stored.
"""
import json

from django.conf import settings
from django.db.models import Sum

from accounts.models import ChatSession, Organization


class StorageLimitExceeded(Exception):
    """Storing these messages would go past a limit: an HTTP status, an error code and the field at fault."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def message_bytes(message: dict) -> int:
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())


def quota_of(organization: Organization) -> int:
    own = organization.session_storage_quota_bytes
    return own if own is not None else settings.CHAT_SESSION_QUOTA_BYTES


def used_by(organization_id: int) -> int:
    """Bytes the organization's sessions hold now."""
    return ChatSession.objects.filter(organization_id=organization_id).aggregate(
        used=Sum("size_bytes"))["used"] or 0


def _size(n: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def measure(messages: list[dict], *, param: str = "messages") -> int:
    """The bytes these messages take, or a 413 naming the first that is larger than one stored message may be."""
    limit = settings.CHAT_SESSION_MESSAGE_MAX_BYTES
    total = 0
    for index, message in enumerate(messages):
        size = message_bytes(message)
        if size > limit:
            raise StorageLimitExceeded(
                413, f"{param}[{index}] takes {_size(size)}; a message kept in a chat session may take at most "
                     f"{_size(limit)} (CHAT_SESSION_MESSAGE_MAX_BYTES on this server).",
                code="message_too_large", param=f"{param}[{index}]")
        total += size
    return total


def check_room(organization: Organization, *, session_bytes: int, added: int, param: str) -> None:
    """A 413 when the session would grow past CHAT_SESSION_MAX_BYTES, a 403 when the organization's sessions
    would hold more than its quota. `session_bytes`: what the session holds now (0 for a new one)."""
    limit = settings.CHAT_SESSION_MAX_BYTES
    if session_bytes + added > limit:
        raise StorageLimitExceeded(
            413, f"The chat session would take {_size(session_bytes + added)}; a session may take at most "
                 f"{_size(limit)} (CHAT_SESSION_MAX_BYTES on this server). Start a new session.",
            code="session_too_large", param=param)
    quota, used = quota_of(organization), used_by(organization.pk)
    if used + added > quota:
        raise StorageLimitExceeded(
            403, f"Your organization's chat sessions take {_size(used)} of their {_size(quota)} storage quota; "
                 f"these messages need {_size(added)} more. Delete sessions you no longer need.",
            code="storage_quota_exceeded", param=param)
