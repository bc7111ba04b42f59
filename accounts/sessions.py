"""Server-side chat sessions: look-up, creation, history and appends.

Messages are kept in the normalised format of `inference.chat.request.ChatRequest.messages`:
`role` and `content`, plus `name`, `tool_calls` and `tool_call_id` only when set. What they may
take is bounded by accounts.storage: appends past a limit store nothing.
"""
import re

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts import storage
from accounts.models import APIKey, ChatMessage, ChatSession, Organization

TITLE_LENGTH = 60
# Ids are made by accounts.models.new_session_id; anything else cannot name a session.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def session_get(organization: Organization, session_id: str) -> ChatSession | None:
    """The organization's session with this id; None for unknown ids and other organizations' sessions."""
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        return None
    return ChatSession.objects.filter(organization=organization, pk=session_id).first()


def session_create(*, organization: Organization, api_key: APIKey | None, model: str) -> ChatSession:
    now = timezone.now()
    return ChatSession.objects.create(
        organization=organization, api_key=api_key, model=model or "", created_at=now, updated_at=now
    )


def session_discard(session: ChatSession) -> None:
    """Delete a session opened for a request that never ran (it holds no message yet)."""
    if not session.messages.exists():
        session.delete()


def _as_dict(message: ChatMessage) -> dict:
    out = {"role": message.role, "content": message.content}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def session_history(session: ChatSession) -> list[dict]:
    """The session's messages, oldest first, ready to prepend to a request's messages."""
    return [_as_dict(m) for m in ChatMessage.objects.filter(session=session).order_by("position")]


def title_from(content) -> str:
    """A title from a user message: its words on one line, cut at a word to about TITLE_LENGTH characters."""
    if not isinstance(content, str):
        return ""
    text = " ".join(_CONTROL.sub(" ", content).split())
    if len(text) <= TITLE_LENGTH:
        return text
    cut = text[:TITLE_LENGTH].rsplit(" ", 1)[0] if " " in text[:TITLE_LENGTH] else text[:TITLE_LENGTH]
    return cut.rstrip() + "…"


def session_check_room(organization: Organization, session: ChatSession | None, messages: list[dict]) -> None:
    """Raise storage.StorageLimitExceeded when these messages could not be added to the session (None: a new
    one): checked before any work is done for them; session_append checks again as it stores."""
    added = storage.measure(messages)
    held = 0
    if session is not None:
        held = ChatSession.objects.filter(pk=session.pk).values_list("size_bytes", flat=True).first() or 0
    storage.check_room(organization, session_bytes=held, added=added, param="messages")


def session_append(session: ChatSession, messages: list[dict], *, request_id: str) -> None:
    """Append messages at the end of the session, atomically and with consecutive positions.

    The session row is locked for the transaction, so concurrent appends to one session
    queue up instead of racing for positions; the organization's row too, so that appends
    to its other sessions cannot together pass its quota. Raises storage.StorageLimitExceeded,
    storing nothing, when the messages do not fit. A session deleted meanwhile stays deleted
    and the messages are dropped.
    """
    if not messages:
        return
    now = timezone.now()
    added = storage.measure(messages)
    with transaction.atomic():
        organization = Organization.objects.select_for_update(no_key=True).filter(pk=session.organization_id).first()
        locked = ChatSession.objects.select_for_update().filter(pk=session.pk).first()
        if organization is None or locked is None:
            return
        storage.check_room(organization, session_bytes=locked.size_bytes, added=added, param="messages")
        last = ChatMessage.objects.filter(session_id=locked.pk).aggregate(last=Max("position"))["last"]
        start = 0 if last is None else last + 1
        ChatMessage.objects.bulk_create([
            ChatMessage(
                session_id=locked.pk,
                position=start + i,
                role=m["role"],
                content=m.get("content"),
                name=m.get("name") or "",
                tool_calls=m.get("tool_calls") or None,
                tool_call_id=m.get("tool_call_id") or "",
                request_id=request_id or "",
                created_at=now,
            )
            for i, m in enumerate(messages)
        ])
        changes = {"updated_at": now, "size_bytes": locked.size_bytes + added}
        if not locked.title:
            first_user = (ChatMessage.objects.filter(session_id=locked.pk, role="user")
                          .order_by("position").values_list("content", flat=True).first())
            title = title_from(first_user)
            if title:
                changes["title"] = title
        ChatSession.objects.filter(pk=locked.pk).update(**changes)
    for field, value in changes.items():
        setattr(session, field, value)
