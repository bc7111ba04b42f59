"""Save as session: the page's conversation becomes a server-side chat session of the organization.

Each save counts against the organization's PLAYGROUND_SAVES_PER_MINUTE before anything else, and
what it stores against the limits of accounts.storage (one message, one session, the quota).
"""
import math

from django.conf import settings
from django.db import transaction
from django.urls import NoReverseMatch, reverse

from accounts import sessions
from accounts.storage import StorageLimitExceeded
from core import clock
from core.catalogue import get_model
from core.counters import Charge, CountersUnavailable, get_counters
from core.errors import APIError
from inference.chat.errors import invalid, model_not_found
from inference.chat.validation import parse_chat_request

WINDOW_S = 60


def session_url(session_id: str) -> str:
    try:
        return reverse("session-detail", args=[session_id])
    except NoReverseMatch:  # the sessions pages are not installed: their path all the same
        return f"/sessions/{session_id}/"


def _count_save(organization) -> None:
    """Take one save from the organization's minute, or a 429 saying when the next one is possible."""
    limit = settings.PLAYGROUND_SAVES_PER_MINUTE
    now = clock.now()
    window = int(now // WINDOW_S)
    try:
        taken = get_counters().take([Charge(f"org:{organization.pk}:saves", 1, limit)], window)
    except CountersUnavailable:
        raise APIError(503, "Saves cannot be counted right now; nothing was saved. Please retry.",
                       type="server_error", code="rate_limiter_unavailable", headers={"Retry-After": "5"}) from None
    if taken.refused is not None:
        retry_after = max(1, math.ceil((window + 1) * WINDOW_S - now))
        raise APIError(429, f"Your organization may save {limit} conversations per minute "
                            f"(PLAYGROUND_SAVES_PER_MINUTE on this server); try again in {retry_after} s.",
                       type="requests", code="rate_limit_exceeded", headers={"Retry-After": str(retry_after)})


def save_conversation(organization, message: dict) -> dict:
    """Validate the conversation like a request's messages and store it; the `saved` message for the page."""
    _count_save(organization)
    for name in sorted(message):
        if name not in ("type", "model", "messages"):
            raise invalid(f"'{name}' is not part of a saved conversation.", name, "unknown_parameter")
    chat = parse_chat_request({"model": message.get("model"), "messages": message.get("messages")})
    if get_model(chat.model) is None:
        raise model_not_found(chat.model)
    if not any(m["role"] == "assistant" for m in chat.messages):
        raise invalid("There is no answer to save yet: send a message first.", "messages", "empty_conversation")
    try:
        sessions.session_check_room(organization, None, chat.messages)
        with transaction.atomic():
            session = sessions.session_create(organization=organization, api_key=None, model=chat.model)
            sessions.session_append(session, chat.messages, request_id="")
    except StorageLimitExceeded as exc:
        raise APIError(exc.status, exc.message, param=exc.param, code=exc.code) from None
    return {"type": "saved", "session_id": session.pk, "title": session.title, "url": session_url(session.pk)}
