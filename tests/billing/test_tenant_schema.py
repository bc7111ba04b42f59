"""/api/billing in the OpenAPI document, and generated requests through the live server for every kind of caller."""
import pytest
import schemathesis
from django.conf import settings as django_settings
from django.test import Client
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.factories import tenant
from tests.fuzzing import SENT, documented_names, examples, slip_in_edges

OPERATIONS = {
    ("get", "/api/billing/balance"), ("get", "/api/billing/ledger"), ("get", "/api/billing/usage"),
    ("get", "/api/billing/topups"), ("post", "/api/billing/topups"), ("get", "/api/billing/limits"),
    ("patch", "/api/billing/limits"), ("get", "/api/billing/keys/{key_id}/limits"),
    ("patch", "/api/billing/keys/{key_id}/limits"), ("get", "/api/billing/settings"),
    ("patch", "/api/billing/settings"),
}
WRITES = {(method, path) for method, path in OPERATIONS if method != "get"}


@pytest.fixture
def document(http):
    response = http.get("/api/schema")
    assert response.status_code == 200
    return response.json()


def test_every_billing_operation_is_documented_with_its_callers_header_and_errors(document):
    documented = {(method, path) for path, item in document["paths"].items() if path.startswith("/api/billing/")
                  for method in item if method in ("get", "post", "patch", "put", "delete")}
    assert documented == OPERATIONS
    for method, path in OPERATIONS:
        operation = document["paths"][path][method]
        assert operation["tags"] == ["billing"] and operation["summary"]
        assert sorted(operation["security"], key=str) == [{"ApiKeyAuth": []}, {"cookieAuth": []}]
        header = next(p for p in operation["parameters"] if p["in"] == "header")
        assert header["name"] == "X-Organization" and header.get("required", False) is False
        expected = {"400", "401", "404"} | ({"403"} if (method, path) in WRITES else set())
        assert expected <= operation["responses"].keys()
        for status in expected:
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}
    assert document["components"]["securitySchemes"]["cookieAuth"]["in"] == "cookie"
    usage = {p["name"]: p for p in document["paths"]["/api/billing/usage"]["get"]["parameters"]}
    assert usage["group_by"]["schema"]["enum"] == ["day", "model", "key", "day_model"]
    assert usage["start"]["schema"] == usage["end"]["schema"] == {"type": "string", "format": "date"}
    ledger = {p["name"] for p in document["paths"]["/api/billing/ledger"]["get"]["parameters"]}
    assert {"kind", "limit", "offset", "page"} <= ledger
    topup = document["components"]["schemas"]["TopupCreate"]
    assert topup["required"] == ["amount_usd"] and topup["properties"]["amount_usd"]["type"] == "string"
    key_limits = document["components"]["schemas"]["KeyLimits"]["properties"]
    assert document["components"]["schemas"]["SpendCapWindowEnum"]["enum"] == ["day", "week", "month"]
    assert key_limits["spend_cap_usd"]["nullable"] is True and key_limits["rate_limit_rpm"]["minimum"] == 1


def _session_headers(http, user) -> dict:
    """A signed-in browser's cookies and CSRF token, as the live server hands them out."""
    client = Client()
    client.force_login(user)
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"
    token = http.get("/api/billing/balance", headers={"Cookie": cookie}).cookies["csrftoken"]
    http.cookies.clear()
    return {"Cookie": f"{cookie}; csrftoken={token}", "X-CSRFToken": token}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_break_the_server(http, document, mode, transactional_db, fake_stripe):
    acme, globex = tenant("acme"), tenant("globex")
    callers = [_session_headers(http, acme.users["owner"]), _session_headers(http, acme.users["member"]),
               {"Authorization": f"Bearer {acme.secret}"}, {}]
    loaded = schemathesis.openapi.from_dict(document)
    operations = [loaded[path][method.upper()] for method, path in sorted(OPERATIONS)]
    base_url = str(http.base_url).rstrip("/")
    names = {(op.method.upper(), op.path): documented_names(document, op.method, op.path) for op in operations}

    @settings(max_examples=examples(1000), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        operation = data.draw(st.sampled_from(operations))
        key_id = data.draw(st.sampled_from([None, acme.key.pk, globex.key.pk]))
        ids = {"key_id": key_id} if key_id is not None and "{" in operation.path else None
        case = data.draw(operation.as_strategy(generation_mode=mode, path_parameters=ids))
        query_names, body_names = names[(operation.method.upper(), operation.path)]
        slip_in_edges(data, case, query_names=query_names, body_names=body_names)
        headers = dict(data.draw(st.sampled_from(callers)))
        if headers:  # the caller's own credentials, not ones generated from the security schemes
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            case.cookies = {}
        organization = data.draw(st.sampled_from([None, acme.org.pk, globex.org.pk]))
        if organization is not None:
            headers["X-Organization"] = str(organization)
        response = case.call(base_url=base_url, headers=headers)
        SENT["/api/billing"] += 1
        assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        if mode == GenerationMode.POSITIVE:
            case.validate_response(response, checks=[response_schema_conformance, status_code_conformance])

    check()
