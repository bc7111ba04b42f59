"""OpenAI error objects: the one way the platform reports a failure, over every transport.

An `APIError` carries the status, the OpenAI error fields (message, type, param, code) and any
headers. `error_body` is the error object `{"error": {"message", "type", "param", "code"}}`; the
other functions render that same object for one transport each:

- `json_response`: an HTTP response with the object as its JSON body (the /v1 views);
- `sse_event`: one `data: ` server-sent event, for a failure after a stream has started;
- `ws_message`: the playground socket's `error` message (the object plus status and retry_after);
- `exception_handler`: Django REST framework's EXCEPTION_HANDLER (the /api views);
- `handler_response`: the body of the 400/403/404/500 handlers under the API prefixes.

Outages: `outage_of` tells whether an exception is the database or Redis being unreachable (anywhere in
its chain), `outage_error` is the 503 it is answered with (Retry-After, nothing charged), and
`discard_broken_connections` drops this thread's database connections that failed, so the next query
connects again.
"""
import json
import logging
import math

import redis
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DatabaseError, connections
from django.db import InterfaceError as DjangoInterfaceError
from django.db import OperationalError as DjangoOperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

# A 401's message without an Authorization header, its code and its WWW-Authenticate header.
NO_KEY = "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'."
INVALID_API_KEY = "invalid_api_key"
WWW_AUTHENTICATE = 'Bearer realm="api"'


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(error: APIError) -> dict:
    """The OpenAI error object every transport carries."""
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


def json_response(error: APIError) -> JsonResponse:
    """The error as an HTTP response: the error object as JSON, the error's status and headers."""
    response = JsonResponse(error_body(error), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def sse_event(error: APIError) -> bytes:
    """The error as a server-sent event, for failures after a stream has started."""
    return f"data: {json.dumps(error_body(error))}\n\n".encode()


def ws_message(error: APIError) -> dict:
    """The error as a WebSocket message: the error object plus its status and Retry-After (seconds)."""
    fields = {**error_body(error)["error"], "status": error.status}
    if "Retry-After" in error.headers:
        fields["retry_after"] = int(error.headers["Retry-After"])
    return {"type": "error", "error": fields}


# Outages: the database or Redis cannot be reached.

DATABASE = "database"
REDIS = "redis"
DATABASE_UNAVAILABLE = f"{DATABASE}_unavailable"  # the error codes of their 503s
REDIS_UNAVAILABLE = f"{REDIS}_unavailable"
OUTAGE_RETRY_AFTER_S = 5  # a restarted PostgreSQL or Redis answers again within seconds
_OUTAGE_NAMES = {DATABASE: "The database", REDIS: "Redis"}

log = logging.getLogger(__name__)


def _database_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (DjangoOperationalError, DjangoInterfaceError)
    try:  # psycopg's own, when raised outside Django's wrapper (PostgreSQL deployments only)
        import psycopg
    except ImportError:
        return errors
    return (*errors, psycopg.OperationalError, psycopg.InterfaceError)


_DATABASE_ERRORS = _database_errors()
# A refused or dropped connection, or no answer in time (BusyLoadingError, a Redis still loading, is one too).
_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)


def outage_of(exc: BaseException | None) -> str | None:
    """DATABASE or REDIS when `exc`, or an exception it was raised from or while handling, is that service
    being unreachable (a connection refused, lost or timed out); None otherwise."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _DATABASE_ERRORS):
            return DATABASE
        if isinstance(exc, _REDIS_ERRORS):
            return REDIS
        # `raise ... from None` says the error was dealt with: its context is not followed.
        exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ else exc.__context__
    return None


def outage_summary(service: str) -> str:
    """What is down, in words: "The database cannot be reached right now"."""
    return f"{_OUTAGE_NAMES[service]} cannot be reached right now"


def outage_error(service: str) -> APIError:
    """The 503 of a request that met an outage of `service` (DATABASE or REDIS): nothing was charged for it."""
    return APIError(
        503,
        f"{outage_summary(service)}, so your request was not completed and nothing was charged for it. "
        f"Please retry in {OUTAGE_RETRY_AFTER_S} seconds.",
        type="server_error",
        code=f"{service}_unavailable",
        headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)},
    )


def discard_broken_connections() -> None:
    """Close this thread's database connections on which an error occurred (outside a transaction), so the
    next query opens a new one instead of failing on a dead socket."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is None or not connection.errors_occurred or connection.in_atomic_block:
            continue
        try:
            connection.close()
        except DatabaseError:
            log.debug("closing a broken %s connection failed", connection.alias, exc_info=True)


# Django REST framework (/api): every failure is an error object.

def _first_error(detail, path: str = "") -> tuple[str | None, str]:
    """(param, message) of the first error in a ValidationError's detail."""
    if isinstance(detail, dict):
        for field, inner in detail.items():
            if field == "non_field_errors":
                return _first_error(inner, path)
            return _first_error(inner, f"{path}.{field}" if path else str(field))
    if isinstance(detail, list):
        for i, inner in enumerate(detail):
            if isinstance(inner, (dict, list)):
                return _first_error(inner, f"{path}[{i}]")
            return _first_error(inner, path)
    return (path or None), str(detail)


def _drf_error(exc) -> APIError | None:
    if isinstance(exc, APIError):
        return exc
    service = outage_of(exc)
    if service is not None:
        return outage_error(service)
    if isinstance(exc, (Http404, exceptions.NotFound)):
        message = str(exc.detail) if isinstance(exc, exceptions.NotFound) else "Not found."
        return APIError(404, message, code="not_found")
    if isinstance(exc, exceptions.NotAuthenticated):
        return APIError(401, NO_KEY, code=INVALID_API_KEY)
    if isinstance(exc, exceptions.AuthenticationFailed):
        return APIError(401, str(exc.detail), code=INVALID_API_KEY)
    if isinstance(exc, exceptions.ValidationError):
        param, message = _first_error(exc.detail)
        shown = f"'{param}': {message}" if param else message
        return APIError(400, shown, param=param, code="invalid_value")
    if isinstance(exc, exceptions.MethodNotAllowed):
        return APIError(405, str(exc.detail), code="method_not_allowed")
    if isinstance(exc, exceptions.ParseError):
        return APIError(400, "We could not parse the JSON body of your request. It must be a JSON object.")
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return APIError(415, f"{exc.detail} Send 'Content-Type: application/json'.", code="unsupported_media_type")
    if isinstance(exc, exceptions.Throttled):
        headers = {"Retry-After": str(math.ceil(exc.wait))} if exc.wait is not None else {}
        return APIError(429, str(exc.detail), type="rate_limit_exceeded", code="rate_limit_exceeded",
                        headers=headers)
    if isinstance(exc, (exceptions.PermissionDenied, DjangoPermissionDenied)):
        return APIError(403, str(getattr(exc, "detail", "")) or "Permission denied.", code="permission_denied")
    if isinstance(exc, exceptions.APIException):
        return APIError(exc.status_code, str(exc.detail), code=exc.default_code)
    return None  # a bug: Django's 500 handler answers, in the same shape


def exception_handler(exc, context):
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: the exception as an error object, or None for a bug (a 500)."""
    error = _drf_error(exc)
    if error is None:
        return None
    if error.code in (DATABASE_UNAVAILABLE, REDIS_UNAVAILABLE):
        log.warning("%s: %s", error.code, exc)
        discard_broken_connections()
    headers = dict(error.headers)
    if error.status == 401:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    return Response(error_body(error), status=error.status, headers=headers)


# Django's error handlers (config.views) under the API prefixes.

def handler_error(request, status: int, exception=None) -> APIError:
    """The error a 400, 403, 404 or 500 handler answers an API path with."""
    if status == 404:
        return APIError(404, f"Unknown path: {request.method} {request.path}", code="unknown_url")
    if status == 403:
        return APIError(403, str(exception) or "Forbidden.", type="permission_error")
    if status == 400:
        return APIError(400, "Bad request.")
    return APIError(500, "The server had an error while processing your request.", type="server_error")


def handler_response(request, status: int, exception=None) -> JsonResponse:
    """The body of a 400, 403, 404 or 500 handler for an API path, as JSON."""
    return json_response(handler_error(request, status, exception))
