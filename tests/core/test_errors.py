"""core.errors: one APIError renders to the same OpenAI error object over every transport."""
import json

import pytest
from django.http import Http404
from django.test import Client, RequestFactory
from django.urls import path
from rest_framework import exceptions
from rest_framework.views import APIView

from config import views as error_pages
from core.errors import (NO_KEY, APIError, error_body, exception_handler, handler_response, json_response,
                         sse_event, ws_message)

FIELDS = {"message", "type", "param", "code"}

ERRORS = [
    APIError(400, "'temperature': must be at most 2.", param="temperature", code="invalid_value"),
    APIError(401, "Incorrect API key provided.", code="invalid_api_key"),
    APIError(402, "Insufficient credit.", type="insufficient_quota", code="insufficient_credit"),
    APIError(404, "The model `x` does not exist.", param="model", code="model_not_found"),
    APIError(503, "No worker is live.", type="server_error", code="no_worker", headers={"Retry-After": "5"}),
    APIError(500, "Ünïcode “quotes” fail.", type="server_error"),
]


class Raises(APIView):
    """A DRF view that raises the APIError it is given, as the /api views do."""

    authentication_classes: list = []
    permission_classes: list = []
    error: APIError

    def get(self, request):
        raise self.error


def boom(request):
    raise RuntimeError("a bug")


# A urlconf for the tests below: a DRF view and a view with a bug under both API prefixes.
urlpatterns = [
    path("api/raises", Raises.as_view()),
    path("v1/boom", boom),
    path("api/boom", boom),
]
handler404 = "config.views.not_found"
handler500 = "config.views.server_error"


def _object(error: APIError) -> dict:
    return {"message": error.message, "type": error.type, "param": error.param, "code": error.code}


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: str(e.status))
def test_error_body_is_the_openai_object(error):
    assert error_body(error) == {"error": _object(error)}
    assert set(error_body(error)["error"]) == FIELDS


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: str(e.status))
def test_json_response_carries_the_object_status_and_headers(error):
    response = json_response(error)
    assert response.status_code == error.status
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == error_body(error)
    for name, value in error.headers.items():
        assert response[name] == value


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: str(e.status))
def test_sse_event_is_one_data_event_holding_the_object(error):
    event = sse_event(error)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and event.count(b"\n") == 2
    assert json.loads(event[len(b"data: "):]) == error_body(error)


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: str(e.status))
def test_ws_message_is_the_object_plus_status_and_retry_after(error):
    message = ws_message(error)
    assert message["type"] == "error" and set(message) == {"type", "error"}
    fields = dict(message["error"])
    assert fields.pop("status") == error.status
    if "Retry-After" in error.headers:
        assert fields.pop("retry_after") == int(error.headers["Retry-After"])
    assert fields == _object(error)
    assert list(fields) == ["message", "type", "param", "code"]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: str(e.status))
def test_drf_handler_answers_an_api_error_with_the_same_object(error):
    response = exception_handler(error, {})
    assert response.status_code == error.status
    assert response.data == error_body(error)
    for name, value in error.headers.items():
        assert response[name] == value


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: str(e.status))
def test_every_transport_renders_the_same_object(error):
    over_json = json.loads(json_response(error).content)["error"]
    over_sse = json.loads(sse_event(error)[len(b"data: "):])["error"]
    over_ws = {name: value for name, value in ws_message(error)["error"].items() if name in FIELDS}
    over_drf = exception_handler(error, {}).data["error"]
    assert over_json == over_sse == over_ws == over_drf == _object(error)


@pytest.mark.urls("tests.core.test_errors")
@pytest.mark.parametrize("error", ERRORS, ids=lambda e: str(e.status))
def test_a_drf_view_raising_an_api_error_answers_the_same_json(error, monkeypatch):
    monkeypatch.setattr(Raises, "error", error, raising=False)
    response = Client().get("/api/raises")
    assert response.status_code == error.status
    assert response.json() == json.loads(json_response(error).content)


def test_drf_401s_name_the_scheme_and_a_missing_key():
    response = exception_handler(exceptions.NotAuthenticated(), {})
    assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.data == {"error": {"message": NO_KEY, "type": "invalid_request_error", "param": None,
                                       "code": "invalid_api_key"}}
    failed = exception_handler(exceptions.AuthenticationFailed("Incorrect API key provided: sk-…."), {})
    assert failed.status_code == 401 and failed.data["error"]["message"] == "Incorrect API key provided: sk-…."


@pytest.mark.parametrize("exc, status, code", [
    (Http404("no"), 404, "not_found"),
    (exceptions.NotFound(), 404, "not_found"),
    (exceptions.MethodNotAllowed("DELETE"), 405, "method_not_allowed"),
    (exceptions.ParseError(), 400, None),
    (exceptions.UnsupportedMediaType("text/plain"), 415, "unsupported_media_type"),
    (exceptions.Throttled(wait=2.1), 429, "rate_limit_exceeded"),
    (exceptions.PermissionDenied(), 403, "permission_denied"),
])
def test_drf_exceptions_become_error_objects(exc, status, code):
    response = exception_handler(exc, {})
    assert response.status_code == status
    assert set(response.data["error"]) == FIELDS and response.data["error"]["code"] == code
    if status == 429:
        assert response["Retry-After"] == "3"


def test_drf_validation_errors_name_the_first_param():
    exc = exceptions.ValidationError({"items": [{"amount": ["must be positive."]}]})
    error = exception_handler(exc, {}).data["error"]
    assert error == {"message": "'items[0].amount': must be positive.", "type": "invalid_request_error",
                     "param": "items[0].amount", "code": "invalid_value"}


def test_a_bug_is_left_to_the_500_handler():
    assert exception_handler(RuntimeError("a bug"), {}) is None


@pytest.mark.parametrize("prefix", ["/v1", "/api"])
def test_a_404_under_the_api_prefixes_is_the_json_error_object(prefix, db):
    response = Client().get(f"{prefix}/nothing-here")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json() == {"error": {"message": f"Unknown path: GET {prefix}/nothing-here",
                                         "type": "invalid_request_error", "param": None, "code": "unknown_url"}}


@pytest.mark.urls("tests.core.test_errors")
@pytest.mark.parametrize("prefix", ["/v1", "/api"])
def test_a_500_under_the_api_prefixes_is_the_json_error_object(prefix):
    client = Client(raise_request_exception=False)
    response = client.get(f"{prefix}/boom")
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert response.json() == {"error": {"message": "The server had an error while processing your request.",
                                         "type": "server_error", "param": None, "code": None}}


@pytest.mark.parametrize("handler, status", [
    (error_pages.not_found, 404), (error_pages.permission_denied, 403), (error_pages.bad_request, 400),
])
def test_the_error_handlers_answer_api_paths_with_handler_response(handler, status):
    request = RequestFactory().get("/api/sessions/x")
    exception = Exception("Not yours.") if status == 403 else None
    response = handler(request, exception)
    expected = handler_response(request, status, exception)
    assert response.status_code == expected.status_code == status
    assert json.loads(response.content) == json.loads(expected.content)
    assert set(json.loads(response.content)["error"]) == FIELDS


def test_the_500_handler_answers_api_paths_with_handler_response():
    request = RequestFactory().get("/v1/chat/completions")
    response = error_pages.server_error(request)
    assert response.status_code == 500
    assert json.loads(response.content) == json.loads(handler_response(request, 500).content)


def test_the_403_handler_keeps_the_reason():
    request = RequestFactory().get("/v1/models")
    body = json.loads(error_pages.permission_denied(request, Exception("Not yours.")).content)
    assert body["error"] == {"message": "Not yours.", "type": "permission_error", "param": None, "code": None}
