"""Rate limits as a client of the live server sees them: the official SDK, its headers and its RateLimitError."""

import openai
import pytest

from tests.api.conftest import TINY, stream_then_disconnect, wait_for_usage
from tests.factories import make_key, make_org
from tests.poll import wait_until

pytestmark = pytest.mark.money

HI = [{"role": "user", "content": "Hi"}]


def sdk(base_url, secret):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0)


def limited_key(org, name, **limits):
    key, secret = make_key(org, name=name)
    for field, value in limits.items():
        setattr(key, field, value)
    key.save(update_fields=list(limits))
    return key, secret


def remaining(headers) -> tuple[int, int]:
    return int(headers["x-ratelimit-remaining-requests"]), int(headers["x-ratelimit-remaining-tokens"])


def prompt_tokens(client) -> int:
    return client.chat.completions.create(model=TINY, messages=HI, max_tokens=1).usage.prompt_tokens


def test_headers_count_down_across_completions_and_streams(base_url, http, alice, counters, clock):
    _, secret = limited_key(alice, "metered", rate_limit_rpm=5, rate_limit_tpm=10_000)
    api = sdk(base_url, secret)
    raw = api.chat.completions.with_raw_response.create(model=TINY, messages=HI, max_tokens=3)
    first = raw.parse().usage
    assert {name: raw.headers[name] for name in raw.headers if name.startswith("x-ratelimit")} == {
        "x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "4", "x-ratelimit-reset-requests": "59s",
        "x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": str(10_000 - first.prompt_tokens - 3),
        "x-ratelimit-reset-tokens": "59s",
    }
    clock.advance(20)
    raw = api.chat.completions.with_raw_response.create(model=TINY, messages=HI, max_tokens=3, stream=True,
                                                        stream_options={"include_usage": True})
    # Admitted with the first request corrected to its exact tokens, and this one's reservation.
    assert remaining(raw.headers) == (3, 10_000 - first.total_tokens - first.prompt_tokens - 3)
    assert raw.headers["x-ratelimit-reset-tokens"] == "39s"
    second = [chunk.usage for chunk in raw.parse() if chunk.usage][0]
    models = http.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert remaining(models.headers) == (3, 10_000 - first.total_tokens - second.total_tokens)


def test_requests_over_a_keys_rpm_get_429_until_the_window_resets(base_url, alice, counters, clock):
    _, secret = limited_key(alice, "slow", rate_limit_rpm=2)
    api = sdk(base_url, secret)
    for _ in range(2):
        api.chat.completions.create(model=TINY, messages=HI, max_tokens=1)
    clock.advance(17)
    with pytest.raises(openai.RateLimitError) as refused:
        api.chat.completions.create(model=TINY, messages=HI, max_tokens=1)
    error = refused.value
    assert (error.status_code, error.code, error.type) == (429, "rate_limit_exceeded", "requests")
    assert "API key" in error.message and "limit 2" in error.message
    assert error.response.headers["Retry-After"] == "42"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.response.headers["x-ratelimit-reset-requests"] == "42s"
    clock.advance(42)
    raw = api.chat.completions.with_raw_response.create(model=TINY, messages=HI, max_tokens=1)
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"


def test_tokens_over_a_keys_tpm_get_429_until_the_window_resets(base_url, alice, client, counters, clock):
    limit = prompt_tokens(client) + 5
    _, secret = limited_key(alice, "thin", rate_limit_tpm=limit)
    api = sdk(base_url, secret)
    api.chat.completions.create(model=TINY, messages=HI, max_tokens=5)  # reserves the whole minute's tokens
    with pytest.raises(openai.RateLimitError) as refused:
        api.chat.completions.create(model=TINY, messages=HI, max_tokens=5)
    assert (refused.value.code, refused.value.type) == ("rate_limit_exceeded", "tokens")
    assert "API key" in refused.value.message and f"limit {limit}" in refused.value.message
    assert refused.value.response.headers["Retry-After"] == "59"
    clock.advance(60)
    assert api.chat.completions.create(model=TINY, messages=HI, max_tokens=5).choices


def test_a_request_larger_than_the_tpm_is_refused_counted_as_a_request_and_takes_no_tokens(base_url, http, alice,
                                                                                           counters, clock):
    alice.rate_limit_rpm = 4
    alice.save(update_fields=["rate_limit_rpm"])
    _, secret = limited_key(alice, "small", rate_limit_tpm=50)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(base_url, secret).chat.completions.create(model=TINY, messages=HI, max_tokens=1000)
    assert refused.value.type == "tokens" and "Request too large" in refused.value.message
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "3"
    models = http.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert remaining(models.headers) == (3, 50)


def test_an_organizations_limit_is_shared_by_its_keys(base_url, alice, counters, clock):
    alice.rate_limit_rpm = 3
    alice.save(update_fields=["rate_limit_rpm"])
    first, second = (sdk(base_url, limited_key(alice, name)[1]) for name in ("first", "second"))
    seen = []
    for api in (first, second, first):
        raw = api.chat.completions.with_raw_response.create(model=TINY, messages=HI, max_tokens=1)
        seen.append(raw.headers["x-ratelimit-remaining-requests"])
    assert seen == ["2", "1", "0"]
    for api in (second, first):
        with pytest.raises(openai.RateLimitError) as refused:
            api.chat.completions.create(model=TINY, messages=HI, max_tokens=1)
        assert "organization" in refused.value.message and "limit 3" in refused.value.message
    bob = make_org("bob", credit_micro=1_000_000)
    assert sdk(base_url, make_key(bob)[1]).chat.completions.create(model=TINY, messages=HI, max_tokens=1).choices


def test_the_tokens_of_a_cut_stream_are_corrected_to_what_it_used(base_url, http, alice, counters, clock):
    _, secret = limited_key(alice, "streamer", rate_limit_tpm=100_000)
    body = {"model": TINY, "messages": HI, "max_tokens": 1500, "temperature": 0, "stream": True}
    record = wait_for_usage(stream_then_disconnect(base_url, secret, body))
    assert record.completion_tokens < 1500
    expected = 100_000 - record.prompt_tokens - record.completion_tokens
    seen = []

    def corrected():
        seen.append(remaining(http.get("/v1/models", headers={"Authorization": f"Bearer {secret}"}).headers)[1])
        return seen[-1] == expected

    wait_until(corrected, timeout=10, message=lambda: f"{expected} tokens left in the window (last seen: {seen[-1]})")


def test_errors_after_authentication_carry_the_headers_and_refused_requests_give_back_their_tokens(
        base_url, http, counters, clock):
    poor = make_org("poor", credit_micro=10)
    _, secret = limited_key(poor, "poor", rate_limit_rpm=10, rate_limit_tpm=10_000, allowed_models=["other"])
    auth = {"Authorization": f"Bearer {secret}"}
    # Every authenticated request counts, before its body is looked at; tokens count only once admitted.
    invalid = http.post("/v1/chat/completions", json={"model": TINY}, headers=auth)
    assert invalid.status_code == 400 and remaining(invalid.headers) == (9, 10_000)
    forbidden = http.post("/v1/chat/completions", json={"model": TINY, "messages": HI}, headers=auth)
    assert forbidden.status_code == 403 and remaining(forbidden.headers) == (8, 10_000)
    _, secret = limited_key(poor, "poor2", rate_limit_rpm=10, rate_limit_tpm=10_000)
    auth = {"Authorization": f"Bearer {secret}"}
    unpaid = http.post("/v1/chat/completions", json={"model": TINY, "messages": HI, "max_tokens": 50}, headers=auth)
    assert unpaid.status_code == 402
    assert remaining(unpaid.headers) == (9, 10_000)  # the request counts; the tokens it never used do not
    unknown = http.post("/v1/chat/completions", json={"model": TINY, "messages": HI},
                        headers={"Authorization": "Bearer sk-unknown"})
    assert unknown.status_code == 401 and "x-ratelimit-limit-requests" not in unknown.headers


def test_models_list_reports_where_the_key_stands(http, alice, counters, clock, settings):
    settings.ORG_RATE_LIMIT_TPM = 777
    _, secret = limited_key(alice, "lister", rate_limit_rpm=7)
    response = http.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    assert (response.headers["x-ratelimit-limit-requests"], response.headers["x-ratelimit-limit-tokens"]) == ("7", "777")
    assert remaining(response.headers) == (7, 777)


def test_unreachable_counters_refuse_with_503_and_charge_nothing(http, alice, alice_secret, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = http.post("/v1/chat/completions", json={"model": TINY, "messages": HI, "max_tokens": 1},
                         headers={"Authorization": f"Bearer {alice_secret}"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "rate_limiter_unavailable"
    alice.credit_account.refresh_from_db()
    assert alice.credit_account.held_micro == 0 and alice.credit_account.balance_micro == 1_000_000
