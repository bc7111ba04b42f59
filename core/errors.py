"""OpenAI error objects: the one way the platform reports a failure, over every transport.

An `APIError` carries the status, the OpenAI error fields (message, type, param, code) and any
headers. `error_body` is the error object `{"error": {"message", "type", "param", "code"}}`; the
other functions render that same object for one transport each:

- `json_response`: an HTTP response with the object as its JSON body (the /v1 views);
- `sse_event`: one `data: ` server-sent event, for a failure after a stream has started;
- `ws_message`: the playground socket's `error` message (the object plus status and retry_after);
- `exception_handler`: Django REST framework's EXCEPTION_HANDLER (the /api views);
- `handler_response`: the body of the 400/403/404/500 handlers under the API prefixes.
"""
import json
import math

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
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
