"""Every bad input gets an OpenAI error object with the right status, and costs nothing."""
import openai
import pytest

from accounts.services import api_key_revoke
from billing.models import Hold, UsageRecord
from tests.api.conftest import TINY
from tests.factories import make_key, make_org

pytestmark = pytest.mark.money

HELLO = [{"role": "user", "content": "hi"}]


def post(http, secret, body, **kwargs):
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    if isinstance(body, (bytes, str)):
        return http.post("/v1/chat/completions", content=body, headers=headers, **kwargs)
    return http.post("/v1/chat/completions", json=body, headers=headers, **kwargs)


def assert_error(response, status, param=None, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert "x-request-id" in response.headers or status == 404
    return error


def test_a_missing_key_is_401(http):
    assert_error(post(http, None, {"model": TINY, "messages": HELLO}), 401, code="invalid_api_key")


def test_a_wrong_key_is_401_through_the_sdk(base_url):
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk.chat.completions.create(model=TINY, messages=HELLO)
    assert raised.value.status_code == 401


def test_a_revoked_key_is_401(http, alice):
    key, secret = make_key(alice)
    assert post(http, secret, {"model": TINY, "messages": HELLO, "max_tokens": 1}).status_code == 200
    api_key_revoke(key=key)
    assert_error(post(http, secret, {"model": TINY, "messages": HELLO}), 401)


def test_an_unknown_model_is_404_through_the_sdk(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-nope", messages=HELLO)
    assert raised.value.body["param"] == "model" and raised.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("body, param", [
    ({"messages": HELLO}, "model"),
    ({"model": TINY}, "messages"),
    ({"model": TINY, "messages": []}, "messages"),
    ({"model": TINY, "messages": ["hi"]}, "messages[0]"),
    ({"model": TINY, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": TINY, "messages": [*HELLO, {"role": "user", "content": 5}]}, "messages[1].content"),
    ({"model": TINY, "messages": HELLO, "temperature": 2.5}, "temperature"),
    ({"model": TINY, "messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"model": TINY, "messages": HELLO, "top_p": 1.5}, "top_p"),
    ({"model": TINY, "messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"model": TINY, "messages": HELLO, "max_completion_tokens": 2.5}, "max_completion_tokens"),
    ({"model": TINY, "messages": HELLO, "stop": ["a"] * 33}, "stop"),
    ({"model": TINY, "messages": HELLO, "stop": [1]}, "stop"),
    ({"model": TINY, "messages": HELLO, "seed": "x"}, "seed"),
    ({"model": TINY, "messages": HELLO, "stream": "yes"}, "stream"),
    ({"model": TINY, "messages": HELLO, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": TINY, "messages": HELLO, "n": 129}, "n"),
    ({"model": TINY, "messages": HELLO, "frobnicate": 1}, "frobnicate"),
])
def test_invalid_parameters_are_400_naming_the_param(http, alice_secret, body, param):
    assert_error(post(http, alice_secret, body), 400, param=param)
    assert not Hold.objects.exists()


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_a_body_that_is_not_a_json_object_is_400(http, alice_secret, raw):
    assert_error(post(http, alice_secret, raw), 400)


def test_prompt_plus_max_tokens_beyond_the_context_is_400(http, alice_secret):
    error = assert_error(post(http, alice_secret, {"model": TINY, "messages": HELLO, "max_tokens": 10**6}), 400,
                         param="messages", code="context_length_exceeded")
    assert "context length" in error["message"]


def test_credit_that_cannot_cover_the_request_is_402(base_url):
    broke = make_org("broke")
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key=make_key(broke)[1], max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        sdk.chat.completions.create(model=TINY, messages=HELLO, max_tokens=5)
    assert raised.value.status_code == 402
    assert raised.value.body["code"] == "insufficient_credit"
    assert not UsageRecord.objects.exists()
    broke.credit_account.refresh_from_db()
    assert broke.credit_account.balance_micro == 0 and broke.credit_account.held_micro == 0


def test_the_wrong_method_is_405(http, alice_secret):
    response = http.get("/v1/chat/completions", headers={"Authorization": f"Bearer {alice_secret}"})
    assert_error(response, 405)


def test_an_unknown_api_path_is_a_json_404(http):
    response = http.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_health_is_ok(http):
    assert http.get("/healthz").json() == {"status": "ok"}
