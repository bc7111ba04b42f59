"""Auth schemes, route aliases, per-key model allow-lists and rate limits, body size, request ids."""
import openai
import pytest

from billing.models import Hold
from tests.api.conftest import TINY, TINY_GREEDY
from tests.factories import make_key

pytestmark = pytest.mark.money

HI = [{"role": "user", "content": "Hi"}]


def test_api_key_scheme_and_api_v1_routes(base_url, http, alice_secret):
    body = {"model": TINY, "messages": HI, "max_tokens": 2}
    for path in ("/v1/chat/completions", "/api/v1/chat/completions"):
        response = http.post(path, json=body, headers={"Authorization": f"Api-Key {alice_secret}"})
        assert response.status_code == 200, response.text
        assert response.json()["object"] == "chat.completion"
    sdk = openai.OpenAI(base_url=f"{base_url}/api/v1", api_key=alice_secret, max_retries=0)
    assert TINY in {m.id for m in sdk.models.list()}
    assert sdk.chat.completions.create(model=TINY, messages=HI, max_tokens=2).object == "chat.completion"


def test_a_key_limited_to_some_models_gets_403_for_others(base_url, alice):
    _, secret = make_key(alice, name="greedy-only")
    from accounts.models import APIKey

    APIKey.objects.filter(name="greedy-only").update(allowed_models=[TINY_GREEDY])
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0)
    assert sdk.chat.completions.create(model=TINY_GREEDY, messages=HI, max_tokens=2).choices
    with pytest.raises(openai.PermissionDeniedError) as err:
        sdk.chat.completions.create(model=TINY, messages=HI, max_tokens=2)
    assert err.value.status_code == 403 and err.value.code == "model_not_allowed"
    assert err.value.body["param"] == "model"
    assert not Hold.objects.filter(status=Hold.Status.ACTIVE).exists()


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(base_url, http, alice):
    key, secret = make_key(alice, name="slow")
    key.rate_limit_rpm = 2
    key.save(update_fields=["rate_limit_rpm"])
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": TINY, "messages": HI, "max_tokens": 1}
    assert [http.post("/v1/chat/completions", json=body, headers=headers).status_code for _ in range(2)] == [200, 200]
    refused = http.post("/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model=TINY, messages=HI, max_tokens=1)


def test_a_body_over_the_limit_gets_413(http, alice_secret, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = {"model": TINY, "messages": [{"role": "user", "content": "x" * 100_000}]}
    response = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {alice_secret}"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert response.headers["x-request-id"]


def test_every_response_carries_a_request_id(http, alice_secret):
    auth = {"Authorization": f"Bearer {alice_secret}"}
    responses = [
        http.get("/healthz"),
        http.get("/v1/models", headers=auth),
        http.get("/v1/nowhere", headers=auth),
        http.post("/v1/chat/completions", json={"model": TINY}, headers=auth),
        http.post("/v1/chat/completions", json={"model": TINY, "messages": HI}),
        http.post("/v1/chat/completions", json={"model": TINY, "messages": HI, "max_tokens": 1}, headers=auth),
    ]
    assert [r.status_code for r in responses] == [200, 200, 404, 400, 401, 200]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)
