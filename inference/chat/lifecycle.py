"""One chat completion's life, the same for `/v1/chat/completions` and the dashboard's playground.

    admit     count the request (rate limits), read the body, pick the model and the session, prepare the prompt
              within its bounds, admit its tokens: every refusal here holds no credit
    pay       hold the request's greatest cost, open its session, queue it; one guard: any failure releases the
              hold, gives the admitted tokens back and drops a session opened for it
    run       `Generation` follows the engine's events and settles the hold exactly once, from the final count
    remember  append the turn (the new messages and the first choice's answer) to the session

The API view and the playground consumer only speak their transport around these calls.
"""
import logging
from dataclasses import dataclass

from asgiref.sync import sync_to_async

from accounts import sessions
from accounts.models import APIKey, ChatSession, Organization
from accounts.storage import StorageLimitExceeded
from billing.services import InsufficientCredit, hold_place, hold_release, price_get
from billing.spend import SpendCapReached
from core.catalogue import ModelSpec
from core.errors import APIError, outage_of
from inference.availability import ModelUnavailable
from inference.chat.errors import backend_unavailable, insufficient_credit, model_not_found
from inference.chat.generation import Generation
from inference.chat.limits import RequestLimits, check_model_allowed, spend_cap_reached
from inference.chat.metrics import label_model
from inference.chat.prepare import PreparedChat, prepare
from inference.chat.request import ChatRequest
from inference.chat.validation import parse_chat_request
from inference.dispatch import find_model, get_backend
from inference.engine.types import GenerationRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrganizationOnly:
    """The rate-limit subject of a request made without a key: only its organization's limits apply."""

    organization: Organization
    rate_limit_rpm = None
    rate_limit_tpm = None


@dataclass(frozen=True)
class Caller:
    """Who pays for a request: an organization, through one of its API keys or through the dashboard."""

    organization: Organization
    api_key: APIKey | None = None
    auto_session: bool = True  # start a session when the organization auto-creates them (the API)

    @property
    def rate_subject(self):
        return self.api_key if self.api_key is not None else OrganizationOnly(self.organization)

    @property
    def opens_session(self) -> bool:
        return self.auto_session and self.organization.auto_create_sessions


@dataclass
class Chat:
    """One admitted, paid-for and queued request: the caller starts `generation` and reads its events."""

    request_id: str
    request: ChatRequest
    prepared: PreparedChat
    generation: Generation
    session: ChatSession | None


async def admit(body: dict, caller: Caller, *, request_id: str, started: float, limits: RequestLimits,
                parse=parse_chat_request) -> Chat:
    """Validate, pay for and queue the request; an APIError, with nothing held, when it is refused. `parse`: how
    the body becomes a ChatRequest (a legacy completion's: inference.chat.validate_completion)."""
    await limits.count_request(caller.rate_subject)  # before any work on the body (no-op if the caller did)
    chat = parse(body)
    spec = await _model(chat, caller)
    session, messages = await _session(chat, caller)
    backend = get_backend()
    prepared = await prepare(chat, spec, backend, messages, caller.organization)
    await limits.admit(caller.rate_subject, tokens=prepared.num_prompt_tokens + _completion_tokens(chat, prepared))
    try:
        return await _pay(caller, backend, spec, chat, prepared, session, request_id=request_id, started=started,
                          limits=limits)
    except BaseException:
        await limits.give_back()  # refused or failed before it ran: its tokens do not count
        raise


def _completion_tokens(chat: ChatRequest, prepared: PreparedChat) -> int:
    """The most completion tokens the request can be charged: max_tokens for each choice of each prompt."""
    return prepared.params.max_tokens * chat.n * len(prepared.prompts)


async def remember(chat: Chat, choices: list[dict]) -> None:
    """Append this turn (the new messages and the first choice's answer) to the request's session."""
    if chat.session is None or not choices:
        return
    message = {"role": "assistant", "content": choices[0]["message"]["content"]}
    if choices[0]["message"].get("tool_calls"):
        message["tool_calls"] = choices[0]["message"]["tool_calls"]
    try:
        await sync_to_async(sessions.session_append)(chat.session, [*chat.request.messages, message],
                                                     request_id=chat.request_id)
    except StorageLimitExceeded as exc:  # the answer was sent: the session does not keep this turn
        log.warning("session %s does not keep turn %s: %s", chat.session.pk, chat.request_id, exc.message)
    except Exception as exc:
        if outage_of(exc) is None:
            raise
        # The answer was sent (or is being) and charged: an outage now only costs the session this turn.
        log.warning("session %s does not keep turn %s: the %s is unreachable", chat.session.pk, chat.request_id,
                    outage_of(exc))


async def _model(chat: ChatRequest, caller: Caller) -> ModelSpec:
    return await resolve_model(chat.model, caller.api_key)


async def resolve_model(model: str, api_key: APIKey | None) -> ModelSpec:
    """The listed model of that id the key may use, or the 404, 403 or 503 that says why not."""
    try:
        spec = await find_model(model)  # listed: prepared here, or served by a live worker (the queue)
    except ModelUnavailable as exc:  # the queue, unreachable, cannot say whether a worker serves it
        raise backend_unavailable(exc) from None
    if spec is None:
        raise model_not_found(model)
    label_model(spec.id)  # the HTTP request's answer is counted by this model from here on (403s included)
    if api_key is not None:
        check_model_allowed(api_key, spec.id)
    return spec


async def _session(chat: ChatRequest, caller: Caller) -> tuple[ChatSession | None, list[dict]]:
    """The session this request continues (None without one) and the full message list, once the session is
    known to have room for the new messages (accounts.storage)."""
    session, messages = None, chat.messages
    if chat.session_id is not None:
        session = await sync_to_async(sessions.session_get)(caller.organization, chat.session_id)
        if session is None:
            raise APIError(404, f"No session `{chat.session_id}` exists in your organization.", param="session_id",
                           code="session_not_found")
        messages = await sync_to_async(sessions.session_history)(session) + chat.messages
    if session is not None or caller.opens_session:
        try:
            await sync_to_async(sessions.session_check_room)(caller.organization, session, chat.messages)
        except StorageLimitExceeded as exc:
            raise APIError(exc.status, exc.message, param=exc.param, code=exc.code) from None
    return session, messages


def _cache_salt(organization: Organization) -> str:
    # Prefix-cache blocks are shared only within the organization: another tenant's timing cannot reveal
    # whether a prompt was seen before. The creation time too: a deleted organization's id may be reused.
    return f"org:{organization.pk}:{organization.created_at.isoformat()}"


async def _pay(caller: Caller, backend, spec: ModelSpec, chat: ChatRequest, prepared: PreparedChat,
               session: ChatSession | None, *, request_id: str, started: float, limits: RequestLimits) -> Chat:
    try:
        await backend.check_available(spec)  # refuse before holding credit
    except ModelUnavailable as exc:
        raise backend_unavailable(exc) from None
    hold = await _hold(caller, spec, prepared, chat, request_id)
    opened = None
    try:
        if session is None and caller.opens_session:
            session = opened = await sync_to_async(sessions.session_create)(
                organization=caller.organization, api_key=caller.api_key, model=spec.id)
        first, *more = prepared.prompts
        request = GenerationRequest(request_id, first, prepared.params, constraint=prepared.constraint,
                                    cache_salt=_cache_salt(caller.organization), more_prompts=tuple(map(tuple, more)))
        generation = Generation(backend=backend, spec=spec, hold=hold, started=started, request=request,
                                on_settled=limits.on_settled())
        await backend.enqueue(spec, request)  # last: once queued it may run, and the hold is the generation's
    except BaseException as exc:
        await sync_to_async(hold_release)(hold=hold)  # it never ran: nothing charged, no hold left
        if opened is not None:
            await sync_to_async(sessions.session_discard)(opened)
        if isinstance(exc, ModelUnavailable):
            raise backend_unavailable(exc) from None
        raise
    return Chat(request_id, chat, prepared, generation, session)


async def _hold(caller: Caller, spec: ModelSpec, prepared: PreparedChat, chat: ChatRequest, request_id: str):
    price = await sync_to_async(price_get)(model_id=spec.id, default=spec.default_price)
    try:
        return await sync_to_async(hold_place)(
            organization=caller.organization, api_key=caller.api_key, request_id=request_id, model_id=spec.id,
            prompt_tokens=prepared.num_prompt_tokens, max_tokens=_completion_tokens(chat, prepared), price=price,
        )
    except InsufficientCredit as exc:
        raise insufficient_credit(exc.needed_micro, exc.available_micro) from None
    except SpendCapReached as exc:
        raise spend_cap_reached(exc) from None
