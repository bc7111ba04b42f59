"""DRF exception handler: every /api failure is an OpenAI error object."""
import math

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from inference.api.errors import APIError

NO_KEY = "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'."


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


def _error(exc) -> APIError | None:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, (Http404, exceptions.NotFound)):
        message = str(exc.detail) if isinstance(exc, exceptions.NotFound) else "Not found."
        return APIError(404, message, code="not_found")
    if isinstance(exc, exceptions.NotAuthenticated):
        return APIError(401, NO_KEY, code="invalid_api_key")
    if isinstance(exc, exceptions.AuthenticationFailed):
        return APIError(401, str(exc.detail), code="invalid_api_key")
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
    error = _error(exc)
    if error is None:
        return None
    headers = dict(error.headers)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return Response(error.body(), status=error.status, headers=headers)
