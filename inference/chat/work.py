"""Bounds on the work a chat request causes before it is paid for.

Rendering and tokenizing a prompt costs CPU time in proportion to its length (about a second per
million characters with SmolLM2's tokenizer on one core, and more than linearly above that), and
none of it is charged. So, before any tokenizing: a prompt longer than `API_MAX_PROMPT_CHARS`
characters is a 400, an organization whose credit cannot cover even the least this request can
cost is a 402, and one organization may have at most `API_ORG_TOKENIZING_CHARS` characters being
tokenized at once in this process (429 beyond; a request alone is always let through).
"""
import json
import threading
from contextlib import asynccontextmanager

from asgiref.sync import sync_to_async
from django.conf import settings

from billing.services import account_for, price_get
from core.errors import APIError
from inference.chat.errors import insufficient_credit
from inference.chat.request import ChatRequest

_in_flight: dict[int, int] = {}  # organization id -> characters being tokenized now
_in_flight_lock = threading.Lock()


def _json_chars(value) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) if value else 0


def prompt_chars(chat: ChatRequest, messages: list[dict]) -> int:
    """The characters the chat template renders: messages (a session's history included), tools, documents."""
    total = 0
    for message in messages:
        total += sum(len(message.get(field) or "") for field in ("content", "name", "tool_call_id"))
        for call in message.get("tool_calls") or ():
            total += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return (total + _json_chars([tool.as_openai() for tool in chat.tools]) + _json_chars(chat.documents)
            + _json_chars(chat.chat_template_kwargs) + sum(len(prompt) for prompt in chat.prompts))


def check_prompt_size(chat: ChatRequest, messages: list[dict]) -> int:
    """The characters of work this request brings (its prompt and its response schema), or a 400."""
    chars = prompt_chars(chat, messages)
    limit = settings.API_MAX_PROMPT_CHARS
    if chars > limit and chat.prompts:
        unit = "characters" if isinstance(chat.prompts[0], str) else "tokens"
        what = "The prompt is" if len(chat.prompts) == 1 else f"The {len(chat.prompts)} prompts are together"
        raise APIError(400, f"{what} {chars} {unit} long; at most {limit} are accepted.", param="prompt",
                       code="prompt_too_long")
    if chars > limit:
        history = " with the session's history" if chat.session_id is not None else ""
        raise APIError(400, f"The prompt is {chars} characters long (messages{history}, tools and documents); "
                            f"at most {limit} characters are accepted. Send a shorter conversation.",
                       param="messages", code="prompt_too_long")
    return chars + _json_chars(chat.response_format.schema)


async def check_credit_floor(organization, spec, chat: ChatRequest, window: int) -> None:
    """A 402 when the credit cannot cover one prompt token and the tokens asked for (as many as the model's
    window leaves): the hold would fail anyway. A max_tokens past the window is left to its own 400."""
    price = await sync_to_async(price_get)(model_id=spec.id, default=spec.default_price)
    asked = min(1 if chat.max_tokens is None else chat.max_tokens, max(window - 1, 1))
    least = price.cost_micro(prompt_tokens=1, completion_tokens=asked * chat.n)
    account = await sync_to_async(account_for)(organization=organization)
    if account.available_micro < least:
        raise insufficient_credit(least, account.available_micro)


@asynccontextmanager
async def tokenizing(organization, chars: int):
    """Hold `chars` of the organization's tokenizing allowance while the body runs, or raise 429."""
    limit = settings.API_ORG_TOKENIZING_CHARS
    with _in_flight_lock:
        busy = _in_flight.get(organization.pk, 0)
        if busy and busy + chars > limit:
            raise APIError(429, f"Your organization already has {busy} characters of prompts being prepared on this "
                                f"server and this request brings {chars}: at most {limit} may be prepared at once. "
                                "Retry when those requests have started.",
                           type="requests", code="too_many_concurrent_requests", headers={"Retry-After": "1"})
        _in_flight[organization.pk] = busy + chars
    try:
        yield
    finally:
        with _in_flight_lock:
            left = _in_flight.pop(organization.pk) - chars
            if left > 0:
                _in_flight[organization.pk] = left
