"""Every response carries an x-request-id, so any answer can be traced in the logs; request bodies past the limit
are refused before they are read; the database or Redis unreachable is a 503 to retry, never a 500."""
import json
import logging
import time
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpResponse
from django.template.loader import render_to_string

from core.errors import (OUTAGE_RETRY_AFTER_S, APIError, discard_broken_connections, error_body, json_response,
                         outage_error, outage_of, outage_summary)

log = logging.getLogger(__name__)

API_PREFIXES = ("/v1/", "/api/")  # answered with OpenAI error objects; every other path with pages


class ResponseMiddleware:
    """A middleware that looks at each response, in sync and async stacks alike: subclasses define `process`."""

    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self._async:
            return self._acall(request)
        started = time.perf_counter()
        return self.process(request, self.get_response(request), started)

    async def _acall(self, request):
        started = time.perf_counter()
        return self.process(request, await self.get_response(request), started)

    def process(self, request, response, started: float):
        """The response to send on; `started` is when the request reached this middleware (perf_counter)."""
        raise NotImplementedError


class RequestIdMiddleware(ResponseMiddleware):
    """Adds x-request-id to responses that do not set their own (the chat endpoint sets its completion id)."""

    def process(self, request, response, started):
        if not response.has_header("x-request-id"):
            response["x-request-id"] = f"req_{uuid.uuid4().hex}"
        return response


class OutageMiddleware:
    """The database or Redis unreachable while a view runs (a refused, lost or timed-out connection, however deep
    it was raised): 503 with Retry-After instead of a 500. API paths get an OpenAI error object (`database_unavailable`
    or `redis_unavailable`), dashboard pages a plain page. The thread's broken database connections are closed, so
    the next query connects again: the service resumes by itself once the database is back.

    Django calls `process_exception` for exceptions of views (DRF views re-raise theirs unless core.errors'
    handler answered them); those raised elsewhere in the stack reach config.views.server_error, which answers
    them with `outage_response` too.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        return self.get_response(request)  # a coroutine in an async stack: awaited by the caller

    def process_exception(self, request, exception):
        # Run in the thread of the view's database work (sync_to_async, thread-sensitive, in async stacks).
        return outage_response(request, exception)


def outage_response(request, exception) -> HttpResponse | None:
    """The 503 for an exception that is an outage of the database or Redis; None for any other exception."""
    service = outage_of(exception)
    if service is None:
        return None
    log.warning("%s unreachable during %s %s: %s", service, request.method, request.path, exception)
    discard_broken_connections()
    error = outage_error(service)
    if request.path.startswith(API_PREFIXES):
        return json_response(error)
    # Rendered without the request: its context processors would query the database.
    page = render_to_string("error.html", {
        "title": "Temporarily unavailable",
        "detail": f"{outage_summary(service)}. Nothing was changed: please try again in {OUTAGE_RETRY_AFTER_S} "
                  "seconds.",
    })
    response = HttpResponse(page, status=503)
    response["Retry-After"] = str(OUTAGE_RETRY_AFTER_S)
    return response


class BodyLimitMiddleware:
    """ASGI: an HTTP request body larger than DATA_UPLOAD_MAX_MEMORY_SIZE (API_MAX_BODY_BYTES) gets 413 before any
    work, authentication included.

    Django's ASGI handler reads a whole body (into a temporary file) before a view can refuse it; this refuses a
    declared Content-Length past the limit without reading a byte, and stops reading a body sent without one
    (chunked) as soon as it passes the limit.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if scope["type"] != "http" or limit is None:
            return await self.app(scope, receive, send)
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None:
            if not declared.isdigit():
                return await _refuse(send, 400, f"The Content-Length header {declared[:40].decode('latin-1')!r} "
                                                "is not a number of bytes.", "invalid_content_length")
            if int(declared) > limit:
                return await _refuse(send, 413, _too_large(limit), "request_too_large")
        received = 0
        cut = False
        started = False

        async def limited_receive():
            nonlocal received, cut
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = True  # the app sees the client go away and answers nothing; the 413 follows
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, tracked_send)
        if cut and not started:
            await _refuse(send, 413, _too_large(limit), "request_too_large")


def _too_large(limit: int) -> str:
    return f"The request body is larger than the limit of {limit:,} bytes (API_MAX_BODY_BYTES)."


async def _refuse(send, status: int, message: str, code: str) -> None:
    """An OpenAI error object; the connection closes, since the rest of the body is not read."""
    body = json.dumps(error_body(APIError(status, message, code=code))).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), (b"x-request-id", f"req_{uuid.uuid4().hex}".encode())]})
    await send({"type": "http.response.body", "body": body})
