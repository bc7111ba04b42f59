"""POST /v1/chat/completions: auth → validate → model checks → rate limits → hold → dispatch → respond → settle."""
import time
import uuid

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts import sessions
from billing.limits.spend import SpendCapReached
from billing.services import InsufficientCredit, hold_place, hold_release, price_get
from inference.api import chunks, responses
from inference.api.auth import authenticate
from inference.api.errors import APIError, insufficient_credit, model_not_found, no_capacity, unavailable
from inference.api.generation import Generation
from inference.api.limits import RequestLimits, check_model_allowed, spend_cap_reached
from inference.api.prepare import prepare_chat
from inference.api.validation import parse_body, parse_chat_request
from inference.dispatch import ModelUnavailable, NoCapacity, get_backend
from inference.engine.types import GenerationRequest
from inference.registry import get_model


def _read_body(request) -> bytes:
    try:
        return request.body
    except RequestDataTooBig:
        raise APIError(413, "The request body is too large. Send a shorter conversation.",
                       code="request_too_large") from None


async def _session(chat, key):
    """The session this request continues or starts (None without sessions), and the full message list."""
    organization = key.organization
    if chat.session_id is not None:
        session = await sync_to_async(sessions.session_get)(organization, chat.session_id)
        if session is None:
            raise APIError(404, f"No session `{chat.session_id}` exists in your organization.", param="session_id",
                           code="session_not_found")
        history = await sync_to_async(sessions.session_history)(session)
        return session, history + chat.messages
    return None, chat.messages


class _Call:
    """What one accepted request carries from preparation to its response."""

    def __init__(self, chat, prepared, generation, session):
        self.chat, self.prepared, self.generation, self.session = chat, prepared, generation, session


async def _prepare(request, request_id: str, started: float, limits: RequestLimits) -> _Call:
    if request.method != "POST":
        raise APIError(405, f"Method {request.method} is not allowed; use POST.", code="method_not_allowed")
    key = limits.key = await authenticate(request)
    chat = parse_chat_request(parse_body(_read_body(request)))
    spec = get_model(chat.model)
    if spec is None or not spec.is_prepared:
        raise model_not_found(chat.model)
    check_model_allowed(key, spec.id)
    session, messages = await _session(chat, key)
    backend = get_backend()
    try:
        tokenizer = await backend.tokenizer(spec)
    except ModelUnavailable as exc:
        raise unavailable(str(exc)) from None
    prepared = await prepare_chat(chat, spec, tokenizer, messages)
    await limits.admit(key, tokens=len(prepared.prompt_ids) + prepared.params.max_tokens * chat.n)
    try:
        await backend.check_available(spec)  # refuse before holding credit
    except ModelUnavailable as exc:
        raise _unavailable(exc) from None
    price = await sync_to_async(price_get)(model_id=spec.id, default=spec.default_price)
    try:
        hold = await sync_to_async(hold_place)(
            organization=key.organization, api_key=key, request_id=request_id, model_id=spec.id,
            prompt_tokens=len(prepared.prompt_ids), max_tokens=prepared.params.max_tokens * chat.n, price=price,
        )
    except InsufficientCredit as exc:
        raise insufficient_credit(exc.needed_micro, exc.available_micro) from None
    except SpendCapReached as exc:
        raise spend_cap_reached(exc) from None
    generation_request = GenerationRequest(request_id, prepared.prompt_ids, prepared.params,
                                           constraint=prepared.constraint)
    try:
        await backend.enqueue(spec, generation_request)  # queued only once it is paid for
    except BaseException as exc:
        await sync_to_async(hold_release)(hold=hold)  # it never ran: nothing charged, no hold left
        if isinstance(exc, ModelUnavailable):
            raise _unavailable(exc) from None
        raise
    if session is None and key.organization.auto_create_sessions:
        session = await sync_to_async(sessions.session_create)(organization=key.organization, api_key=key,
                                                               model=spec.id)
    generation = Generation(backend=backend, spec=spec, hold=hold, started=started, request=generation_request,
                            on_settled=limits.on_settled())
    return _Call(chat, prepared, generation, session)


def _unavailable(exc: ModelUnavailable) -> APIError:
    if isinstance(exc, NoCapacity):
        return no_capacity(str(exc), exc.code, exc.retry_after)
    return unavailable(str(exc))


def _remember(call: _Call, request_id: str):
    """Appends this turn (the new messages and the first choice's answer) to the call's session."""

    async def remember(choices: list[dict]) -> None:
        if call.session is None or not choices:
            return
        turn = [*call.chat.messages, responses.assistant_message(choices[0])]
        await sync_to_async(sessions.session_append)(call.session, turn, request_id=request_id)

    return remember


@csrf_exempt
async def chat_completions(request):
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    started = time.monotonic()
    limits = RequestLimits()
    try:
        call = await _prepare(request, request_id, started, limits)
    except APIError as exc:
        await limits.give_back()  # refused before it ran: its tokens do not count
        response = exc.response()
        for name, value in (await limits.headers(exc)).items():
            response[name] = value
        response["x-request-id"] = request_id
        return response
    call.generation.start()
    created = int(time.time())
    extra = {"session_id": call.session.pk} if call.session is not None else {}
    remember = _remember(call, request_id)
    if call.chat.stream:
        writer = chunks.ChunkWriter(id=request_id, created=created, model=call.chat.model,
                                    include_usage=call.chat.include_usage, extra=extra)
        response = StreamingHttpResponse(responses.stream(call.generation, call.chat, call.prepared, writer, remember),
                                         content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
    else:
        response, choices = await responses.collect(call.generation, call.chat, call.prepared,
                                                    request_id=request_id, created=created, extra=extra)
        if choices is not None:
            await remember(choices)
    if call.session is not None:
        response["x-session-id"] = call.session.pk
    for name, value in (await limits.headers()).items():
        response[name] = value
    response["x-request-id"] = request_id
    return response
