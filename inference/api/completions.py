"""POST /v1/chat/completions over HTTP: the key, the body, then the chat's lifecycle (inference.chat.lifecycle)
answered as one JSON body or as server-sent events."""
import time
import uuid
from functools import partial

from django.core.exceptions import RequestDataTooBig
from django.http import StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from core.errors import APIError, json_response
from inference.api import chunks, responses
from inference.api.auth import authenticate
from inference.chat import lifecycle
from inference.chat.limits import RequestLimits
from inference.chat.validate_completion import parse_completion_request
from inference.chat.validation import parse_body


def read_body(request) -> bytes:
    try:
        return request.body
    except RequestDataTooBig:
        raise APIError(413, "The request body is too large. Send a shorter conversation.",
                       code="request_too_large") from None


async def admit(request, request_id: str, started: float, limits: RequestLimits, *, legacy: bool = False
                ) -> lifecycle.Chat:
    """The key, its count, the body, then the lifecycle's admission (legacy: a POST /v1/completions body, which
    opens no session)."""
    if request.method != "POST":
        raise APIError(405, f"Method {request.method} is not allowed; use POST.", code="method_not_allowed")
    key = await authenticate(request)
    await limits.count_request(key)  # every authenticated request counts, before its body is read
    body = parse_body(read_body(request))
    caller = lifecycle.Caller(key.organization, api_key=key, auto_session=not legacy)
    return await lifecycle.admit(body, caller, request_id=request_id, started=started, limits=limits,
                                 **({"parse": parse_completion_request} if legacy else {}))


def _respond(chat: lifecycle.Chat):
    """The streaming response, or (for a whole body) None: `collect` answers it."""
    writer = chunks.ChunkWriter(id=chat.request_id, created=int(time.time()), model=chat.request.model,
                                include_usage=chat.request.include_usage, extra=_extra(chat))
    response = StreamingHttpResponse(
        responses.stream(chat.generation, chat.request, chat.prepared, writer, partial(lifecycle.remember, chat)),
        content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _extra(chat: lifecycle.Chat) -> dict:
    return {"session_id": chat.session.pk} if chat.session is not None else {}


async def refused(exc: APIError, limits: RequestLimits, request_id: str):
    """The error response of a request refused before it ran, with its rate-limit headers and id."""
    response = json_response(exc)
    for name, value in (await limits.headers(exc)).items():
        response[name] = value
    response["x-request-id"] = request_id
    return response


@csrf_exempt
async def chat_completions(request):
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    started = time.monotonic()
    limits = RequestLimits()
    try:
        chat = await admit(request, request_id, started, limits)
    except APIError as exc:
        return await refused(exc, limits, request_id)
    chat.generation.start()
    if chat.request.stream:
        response = _respond(chat)
    else:
        response, choices = await responses.collect(chat.generation, chat.request, chat.prepared,
                                                    request_id=request_id, created=int(time.time()),
                                                    extra=_extra(chat))
        if choices is not None:
            await lifecycle.remember(chat, choices)
    if chat.session is not None:
        response["x-session-id"] = chat.session.pk
    for name, value in (await limits.headers()).items():
        response[name] = value
    response["x-request-id"] = request_id
    return response
