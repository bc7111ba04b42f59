"""The OpenAPI document at /api/schema and the Swagger UI at /api/docs, through the live uvicorn server."""
import dataclasses
import re

import pytest
import schemathesis
import yaml
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis import GenerationMode

from accounts.sessions import session_append, session_create
from inference.chat import validation
from inference.chat.request import ChatRequest
from tests.fuzzing import SENT, documented_names, examples, slip_in_edges

# Request fields that travel under another name in the body.
BODY_NAME = {"include_usage": "stream_options", "max_tokens": "max_completion_tokens", "structured": "structured_outputs"}
OPENAI_OPERATIONS = {
    ("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/v1/models/{model}"),
    ("POST", "/api/v1/chat/completions"), ("GET", "/api/v1/models"), ("GET", "/api/v1/models/{model}"),
    ("POST", "/tokenize"), ("POST", "/detokenize"), ("POST", "/v1/completions"), ("POST", "/api/v1/completions"),
}
SESSION_OPERATIONS = {
    ("GET", "/api/sessions"), ("GET", "/api/sessions/{session_id}"), ("PATCH", "/api/sessions/{session_id}"),
    ("DELETE", "/api/sessions/{session_id}"), ("GET", "/api/sessions/{session_id}/messages"),
}
# Signed-in members (a session cookie) or the organization's API keys: tests/billing/test_tenant_schema.py.
BILLING_OPERATIONS = {(method, f"/api/billing/{path}") for method, path in [
    ("GET", "balance"), ("GET", "ledger"), ("GET", "usage"), ("GET", "topups"), ("POST", "topups"),
    ("GET", "limits"), ("PATCH", "limits"), ("GET", "keys/{key_id}/limits"), ("PATCH", "keys/{key_id}/limits"),
    ("GET", "settings"), ("PATCH", "settings"),
]}


@pytest.fixture
def document(http):
    response = http.get("/api/schema")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_the_schema_is_a_valid_openapi_3_document_of_the_whole_api(document):
    assert document["openapi"].startswith("3.")
    validate_schema(document)
    loaded = schemathesis.openapi.from_dict(document)
    loaded.validate()
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == (
        OPENAI_OPERATIONS | SESSION_OPERATIONS | BILLING_OPERATIONS)
    assert document["components"]["securitySchemes"]["ApiKeyAuth"] == {
        **document["components"]["securitySchemes"]["ApiKeyAuth"], "type": "http", "scheme": "bearer"}
    for method, path in OPENAI_OPERATIONS | SESSION_OPERATIONS:
        assert document["paths"][path][method.lower()]["security"] == [{"ApiKeyAuth": []}]


def test_yaml_is_there_on_request(http, document):
    response = http.get("/api/schema", params={"format": "yaml"})
    assert response.status_code == 200 and "yaml" in response.headers["content-type"]
    assert yaml.safe_load(response.text)["paths"].keys() == document["paths"].keys()


def test_the_chat_request_documents_every_parameter_the_server_accepts(document):
    schemas = document["components"]["schemas"]
    body = schemas["ChatCompletionRequest"]
    operation = document["paths"]["/v1/chat/completions"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"}
    assert body["additionalProperties"] is False and body["required"] == ["model", "messages"]
    properties = body["properties"]
    for field in dataclasses.fields(ChatRequest):
        if field.name != "prompts":  # a legacy completion's (below)
            assert BODY_NAME.get(field.name, field.name) in properties, field.name
    # Exactly what the validator takes: nothing accepted is missing, nothing documented is refused as unknown.
    assert properties.keys() == validation.ACCEPTED | validation.NEUTRAL_ONLY.keys() | validation.UNSUPPORTED.keys()
    assert properties["best_of"]["enum"] == [1, None] and properties["functions"]["enum"] == [None]

    def bounds(name):
        return properties[name].get("minimum"), properties[name].get("maximum")

    assert bounds("temperature") == (0, 2) and bounds("top_p") == (0, 1) and bounds("n") == (1, 128)
    assert bounds("presence_penalty") == bounds("frequency_penalty") == (-2, 2)
    assert bounds("top_logprobs") == (0, 20) and bounds("max_completion_tokens")[0] == 1
    assert bounds("max_tokens")[0] == 1 and bounds("min_p") == (0, 1) and bounds("repetition_penalty") == (0, 2)
    assert properties["repetition_penalty"]["exclusiveMinimum"] is True and bounds("top_k")[0] == -1
    assert properties["logit_bias"]["additionalProperties"] == {"type": "number", "minimum": -100, "maximum": 100}
    stop_array = [s for s in properties["stop"]["oneOf"] if s["type"] == "array"][0]
    assert stop_array["maxItems"] == 32
    assert properties["stream_options"]["properties"]["include_usage"]["type"] == "boolean"
    shapes = [schemas[one["$ref"].rsplit("/", 1)[1]] for one in schemas["ChatCompletionRequestMessage"]["oneOf"]]
    roles = {role: shape for shape in shapes for role in shape["properties"]["role"]["enum"]}
    assert list(roles) == ["system", "developer", "user", "assistant", "tool"]
    assert {"content", "name", "tool_calls"} <= roles["assistant"]["properties"].keys()
    assert roles["tool"]["required"] == ["role", "content", "tool_call_id"]
    formats = [f["properties"]["type"]["enum"][0] for f in schemas["ResponseFormat"]["oneOf"]]
    assert formats == ["text", "json_object", "json_schema"]


def test_the_chat_responses_cover_json_streams_and_every_error(document):
    responses = document["paths"]["/api/v1/chat/completions"]["post"]["responses"]
    assert responses["200"]["content"].keys() == {"application/json", "text/event-stream"}
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletion")
    assert {"400", "401", "402", "403", "404", "413", "429", "503"} <= responses.keys()
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"message", "type", "param", "code"}
    assert "Retry-After" in responses["503"]["headers"]


def test_the_session_endpoints_document_pagination_and_errors(document):
    listing = document["paths"]["/api/sessions"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "offset", "page"}
    assert {"200", "400", "401"} <= listing["responses"].keys()
    assert "404" in document["paths"]["/api/sessions/{session_id}/messages"]["get"]["responses"]
    rename = document["components"]["schemas"]["SessionRename"]
    assert rename["required"] == ["title"] and rename["properties"]["title"]["maxLength"] == 200


def test_the_docs_page_and_its_assets_load_from_this_server(http):
    page = http.get("/api/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith(("/static/", "/api/docs?script")), asset  # no CDN
        response = http.get(asset)
        assert response.status_code == 200 and response.content, asset
    # The start-up script is a file of its own (no inline script, for the Content-Security-Policy).
    script = http.get("/api/docs?script=")
    assert script.headers["content-type"].startswith("application/javascript") and '"/api/schema"' in script.text
    assert "<script>" not in page.text


def test_the_admin_css_is_served_and_missing_files_are_404(http):
    css = http.get("/static/admin/css/base.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert http.get("/static/admin/css/no-such-file.css").status_code == 404
    assert http.get("/static/../config/settings.py").status_code == 404


@pytest.fixture
def fuzzable(document, alice):
    session = session_create(organization=alice, api_key=None, model="tiny-chat")
    session_append(session, [{"role": "user", "content": "hello"}], request_id="r")
    return schemathesis.openapi.from_dict(document), session.pk


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_to_the_session_endpoints_never_break_the_server(http, alice_auth, fuzzable, mode):
    loaded, session_id = fuzzable
    operations = [loaded[path][method] for method, path in sorted(SESSION_OPERATIONS)]
    document = loaded.raw_schema
    names = {(method, path): documented_names(document, method, path) for method, path in SESSION_OPERATIONS}

    @settings(max_examples=examples(600), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        operation = data.draw(st.sampled_from(operations))
        ids = {"session_id": session_id} if data.draw(st.booleans()) and "{" in operation.path else None
        case = data.draw(operation.as_strategy(generation_mode=mode, path_parameters=ids))
        query_names, body_names = names[(operation.method.upper(), operation.path)]
        slip_in_edges(data, case, query_names=query_names, body_names=body_names)
        response = case.call(base_url=str(http.base_url).rstrip("/"),
                             headers=data.draw(st.sampled_from([alice_auth, alice_auth, alice_auth, {}])))
        SENT["/api/sessions"] += 1
        assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    check()


def test_the_legacy_completion_request_documents_its_prompt_and_no_chat_only_parameter(document):
    from inference.chat.validate_completion import CHAT_ONLY

    operation = document["paths"]["/v1/completions"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["model", "prompt"] and body["additionalProperties"] is False
    properties = body["properties"]
    assert {"prompt", "logprobs", "echo", "max_tokens", "stream", "n", "stop", "seed", "guided_choice"} <= \
        properties.keys()
    assert not properties.keys() & CHAT_ONLY.keys()
    assert properties["logprobs"]["maximum"] == 20
    assert "text/event-stream" in operation["responses"]["200"]["content"]
