"""POST /v1/chat/completions: auth, then the shared pipeline (inference.api.pipeline), then the response."""
import logging
import time
import uuid

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts import sessions
from accounts.storage import StorageLimitExceeded
from inference.api import chunks, responses
from inference.api.auth import authenticate
from core.errors import APIError, json_response
from inference.api.limits import RequestLimits
from inference.api.pipeline import Call, Caller, start_chat
from inference.api.validation import parse_body

log = logging.getLogger(__name__)


def _read_body(request) -> bytes:
    try:
        return request.body
    except RequestDataTooBig:
        raise APIError(413, "The request body is too large. Send a shorter conversation.",
                       code="request_too_large") from None


async def _prepare(request, request_id: str, started: float, limits: RequestLimits) -> Call:
    if request.method != "POST":
        raise APIError(405, f"Method {request.method} is not allowed; use POST.", code="method_not_allowed")
    key = await authenticate(request)
    await limits.count_request(key)  # every authenticated request counts, before its body is read
    body = parse_body(_read_body(request))
    return await start_chat(body, Caller(key.organization, api_key=key), request_id=request_id, started=started,
                            limits=limits)


def _remember(call: Call, request_id: str):
    """Appends this turn (the new messages and the first choice's answer) to the call's session."""

    async def remember(choices: list[dict]) -> None:
        if call.session is None or not choices:
            return
        turn = [*call.chat.messages, responses.assistant_message(choices[0])]
        try:
            await sync_to_async(sessions.session_append)(call.session, turn, request_id=request_id)
        except StorageLimitExceeded as exc:  # the answer was sent: the session does not keep this turn
            log.warning("session %s does not keep turn %s: %s", call.session.pk, request_id, exc.message)

    return remember


@csrf_exempt
async def chat_completions(request):
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    started = time.monotonic()
    limits = RequestLimits()
    try:
        call = await _prepare(request, request_id, started, limits)
    except APIError as exc:
        response = json_response(exc)
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
