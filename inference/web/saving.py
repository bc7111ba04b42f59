"""Save as session: the page's conversation becomes a server-side chat session of the organization."""
from django.db import transaction
from django.urls import NoReverseMatch, reverse

from accounts import sessions
from inference.api.errors import invalid, model_not_found
from inference.api.validation import parse_chat_request
from inference.registry import get_model


def session_url(session_id: str) -> str:
    try:
        return reverse("session-detail", args=[session_id])
    except NoReverseMatch:  # the sessions pages are not installed: their path all the same
        return f"/sessions/{session_id}/"


def save_conversation(organization, message: dict) -> dict:
    """Validate the conversation like a request's messages and store it; the `saved` message for the page."""
    for name in sorted(message):
        if name not in ("type", "model", "messages"):
            raise invalid(f"'{name}' is not part of a saved conversation.", name, "unknown_parameter")
    chat = parse_chat_request({"model": message.get("model"), "messages": message.get("messages")})
    if get_model(chat.model) is None:
        raise model_not_found(chat.model)
    if not any(m["role"] == "assistant" for m in chat.messages):
        raise invalid("There is no answer to save yet: send a message first.", "messages", "empty_conversation")
    with transaction.atomic():
        session = sessions.session_create(organization=organization, api_key=None, model=chat.model)
        sessions.session_append(session, chat.messages, request_id="")
    return {"type": "saved", "session_id": session.pk, "title": session.title, "url": session_url(session.pk)}
