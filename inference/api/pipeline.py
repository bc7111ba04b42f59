"""One chat request, from its body to a running, paid-for generation.

count the request → validate → model checks → prompt size and credit floor → tokenize (bounded
per organization) → token limits → hold → enqueue → Generation (which settles the hold exactly
once when the run ends). `/v1/chat/completions` runs it for an API key, the
dashboard's playground for a signed-in member (no key: only the organization's limits
apply, and no spend cap). Every refusal is an APIError raised before any credit is held,
or with the hold released.
"""
from dataclasses import dataclass

from asgiref.sync import sync_to_async

from accounts import sessions
from accounts.models import APIKey, Organization
from accounts.storage import StorageLimitExceeded
from billing.spend import SpendCapReached
from billing.services import InsufficientCredit, hold_place, hold_release, price_get
from core.errors import APIError
from inference.api.errors import insufficient_credit, model_not_found, no_capacity, unavailable
from inference.api.generation import Generation
from inference.api.limits import RequestLimits, check_model_allowed, spend_cap_reached
from inference.api.prepare import PreparedChat, prepare_chat
from inference.api.request import ChatRequest
from inference.api.validation import parse_chat_request
from inference.api.work import check_credit_floor, check_prompt_size, tokenizing
from inference.availability import ModelUnavailable, NoCapacity
from inference.dispatch import get_backend
from inference.engine.types import GenerationRequest
from core.catalogue import get_model


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


@dataclass
class Call:
    """What one accepted request carries from preparation to its response."""

    chat: ChatRequest
    prepared: PreparedChat
    generation: Generation
    session: object  # accounts.models.ChatSession or None


async def _session(chat: ChatRequest, organization: Organization):
    """The session this request continues (None without one), and the full message list."""
    if chat.session_id is None:
        return None, chat.messages
    session = await sync_to_async(sessions.session_get)(organization, chat.session_id)
    if session is None:
        raise APIError(404, f"No session `{chat.session_id}` exists in your organization.", param="session_id",
                       code="session_not_found")
    history = await sync_to_async(sessions.session_history)(session)
    return session, history + chat.messages


async def _check_session_room(caller: Caller, chat: ChatRequest, session) -> None:
    """Refuse, before any work, messages the request's session could not keep (accounts.storage)."""
    if session is None and not (caller.auto_session and caller.organization.auto_create_sessions):
        return
    try:
        await sync_to_async(sessions.session_check_room)(caller.organization, session, chat.messages)
    except StorageLimitExceeded as exc:
        raise APIError(exc.status, exc.message, param=exc.param, code=exc.code) from None


def _unavailable(exc: ModelUnavailable) -> APIError:
    if isinstance(exc, NoCapacity):
        return no_capacity(str(exc), exc.code, exc.retry_after)
    return unavailable(str(exc))


async def _hold(caller: Caller, spec, prepared: PreparedChat, chat: ChatRequest, request_id: str):
    price = await sync_to_async(price_get)(model_id=spec.id, default=spec.default_price)
    try:
        return await sync_to_async(hold_place)(
            organization=caller.organization, api_key=caller.api_key, request_id=request_id, model_id=spec.id,
            prompt_tokens=len(prepared.prompt_ids), max_tokens=prepared.params.max_tokens * chat.n, price=price,
        )
    except InsufficientCredit as exc:
        raise insufficient_credit(exc.needed_micro, exc.available_micro) from None
    except SpendCapReached as exc:
        raise spend_cap_reached(exc) from None


async def start_chat(body: dict, caller: Caller, *, request_id: str, started: float,
                     limits: RequestLimits) -> Call:
    """Validate and pay for the request, and queue it; the caller starts `call.generation` and reads it."""
    await limits.count_request(caller.rate_subject)  # before any work on the body (no-op if the caller did)
    chat = parse_chat_request(body)
    spec = get_model(chat.model)
    if spec is None or not spec.is_prepared:
        raise model_not_found(chat.model)
    if caller.api_key is not None:
        check_model_allowed(caller.api_key, spec.id)
    session, messages = await _session(chat, caller.organization)
    await _check_session_room(caller, chat, session)
    work_chars = check_prompt_size(chat, messages)
    backend = get_backend()
    try:
        tokenizer = await backend.tokenizer(spec)
    except ModelUnavailable as exc:
        raise unavailable(str(exc)) from None
    await check_credit_floor(caller.organization, spec, chat, tokenizer.context_window)
    async with tokenizing(caller.organization, work_chars):
        prepared = await prepare_chat(chat, spec, tokenizer, messages)
    await limits.admit(caller.rate_subject, tokens=len(prepared.prompt_ids) + prepared.params.max_tokens * chat.n)
    try:
        return await _pay_and_queue(caller, backend, spec, chat, prepared, session, request_id=request_id,
                                    started=started, limits=limits)
    except BaseException:
        await limits.give_back()  # refused or failed before it ran: its tokens do not count
        raise


def _cache_salt(organization: Organization) -> str:
    # The creation time too: a deleted organization's id may be given to a new one.
    return f"org:{organization.pk}:{organization.created_at.isoformat()}"


async def _pay_and_queue(caller: Caller, backend, spec, chat: ChatRequest, prepared: PreparedChat, session, *,
                         request_id: str, started: float, limits: RequestLimits) -> Call:
    try:
        await backend.check_available(spec)  # refuse before holding credit
    except ModelUnavailable as exc:
        raise _unavailable(exc) from None
    hold = await _hold(caller, spec, prepared, chat, request_id)
    # Prefix-cache blocks are shared only within the organization: another tenant's timing
    # cannot reveal whether a prompt was seen before.
    generation_request = GenerationRequest(request_id, prepared.prompt_ids, prepared.params,
                                           constraint=prepared.constraint,
                                           cache_salt=_cache_salt(caller.organization))
    try:
        await backend.enqueue(spec, generation_request)  # queued only once it is paid for
    except BaseException as exc:
        await sync_to_async(hold_release)(hold=hold)  # it never ran: nothing charged, no hold left
        if isinstance(exc, ModelUnavailable):
            raise _unavailable(exc) from None
        raise
    if session is None and caller.auto_session and caller.organization.auto_create_sessions:
        session = await sync_to_async(sessions.session_create)(organization=caller.organization,
                                                               api_key=caller.api_key, model=spec.id)
    generation = Generation(backend=backend, spec=spec, hold=hold, started=started, request=generation_request,
                            on_settled=limits.on_settled())
    return Call(chat, prepared, generation, session)
