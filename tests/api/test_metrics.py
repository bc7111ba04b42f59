"""/metrics: what a Prometheus scraping a web process sees, and who may read it."""
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference.availability import NoCapacity
from inference.chat import lifecycle
from inference.dispatch import get_backend
from tests.api.conftest import TINY, wait_for_usage
from tests.factories import make_key, make_org

pytestmark = pytest.mark.django_db(transaction=True)


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_tokens_and_refusals_are_counted(client, alice, http):
    before = samples(http.get("/metrics").text)
    answer = client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
    wait_for_usage(answer.id)
    http.post("/v1/chat/completions", json={"model": TINY, "messages": []},
              headers={"Authorization": "Bearer sk-not-a-key"})
    after = samples(http.get("/metrics").text)

    route = "/v1/chat/completions"
    assert value(after, "platform_http_requests_total", route=route, method="POST", status="200", model=TINY) \
        - value(before, "platform_http_requests_total", route=route, method="POST", status="200", model=TINY) == 1
    # No key, no body read: no model is known for the 401.
    assert value(after, "platform_http_requests_total", route=route, method="POST", status="401", model="") \
        - value(before, "platform_http_requests_total", route=route, method="POST", status="401", model="") == 1
    for kind, tokens in (("prompt", answer.usage.prompt_tokens), ("completion", answer.usage.completion_tokens)):
        assert value(after, "platform_tokens_total", model=TINY, kind=kind) \
            - value(before, "platform_tokens_total", model=TINY, kind=kind) == tokens
    assert value(after, "platform_requests_settled_total", model=TINY, status="completed") \
        - value(before, "platform_requests_settled_total", model=TINY, status="completed") == 1
    assert value(after, "platform_holds_in_flight") == 0


def test_metrics_are_for_this_host_or_the_token_bearer(settings):
    from django.test import Client

    assert Client(REMOTE_ADDR="203.0.113.9").get("/metrics").status_code == 403
    settings.METRICS_TOKEN = "scrape-secret"
    remote = Client(REMOTE_ADDR="203.0.113.9")
    assert remote.get("/metrics").status_code == 401
    assert remote.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = remote.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert ok.status_code == 200 and b"platform_http_requests_total" in ok.content


def delta(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


class FullQueue:
    """The server's backend, with a queue that takes nothing more (as when INFERENCE_QUEUE_LIMIT is reached)."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    async def enqueue(self, spec, request):
        raise NoCapacity("Too many requests are waiting for this model.", code="queue_full", retry_after=2)


def test_402_429_and_503_are_counted_by_route_and_model(base_url, http, monkeypatch):
    broke = make_org("broke")  # no credit
    _, broke_secret = make_key(broke)
    rich = make_org("rich", credit_micro=1_000_000)
    thin, thin_secret = make_key(rich, "thin")
    thin.rate_limit_tpm = 50
    thin.save(update_fields=["rate_limit_tpm"])
    _, rich_secret = make_key(rich, "plain")
    body = {"model": TINY, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}

    before = samples(http.get("/metrics").text)
    for secret, extra, status in ((broke_secret, {}, 402), (thin_secret, {"max_tokens": 1000}, 429)):
        answer = http.post("/api/v1/chat/completions", json={**body, **extra},
                           headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == status, answer.text
    monkeypatch.setattr(lifecycle, "get_backend", lambda: FullQueue(get_backend()))
    answer = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {rich_secret}"})
    assert answer.status_code == 503, answer.text
    after = samples(http.get("/metrics").text)

    name = "platform_http_requests_total"
    assert delta(before, after, name, route="/api/v1/chat/completions", method="POST", status="402", model=TINY) == 1
    assert delta(before, after, name, route="/api/v1/chat/completions", method="POST", status="429", model=TINY) == 1
    assert delta(before, after, name, route="/v1/chat/completions", method="POST", status="503", model=TINY) == 1
    # An unknown model's name never becomes a label value of its own.
    unknown = http.post("/v1/chat/completions", json={**body, "model": "no-such-model-x1"},
                        headers={"Authorization": f"Bearer {rich_secret}"})
    assert unknown.status_code == 404
    assert "no-such-model-x1" not in http.get("/metrics").text


def test_time_to_first_token_is_observed_once_per_request_streamed_or_whole(client, alice, http):
    name = "platform_time_to_first_token_seconds"
    before = samples(http.get("/metrics").text)
    whole = client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
    chunks = list(client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=5, stream=True))
    assert whole.usage.completion_tokens > 0 and any(c.choices and c.choices[0].delta.content for c in chunks)
    for request_id in (whole.id, chunks[0].id):
        wait_for_usage(request_id)
    after = samples(http.get("/metrics").text)

    assert delta(before, after, f"{name}_count", model=TINY) == 2
    first = delta(before, after, f"{name}_sum", model=TINY)
    whole_time = delta(before, after, "platform_request_latency_seconds_sum", model=TINY)
    assert 0 < first <= whole_time + 0.002  # the first token comes before the end (latency is in whole ms)
    # A request refused before it runs has no first token.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model-x2", messages=[{"role": "user", "content": "Hi"}])
    assert samples(http.get("/metrics").text).get((f"{name}_count", (("model", TINY),))) == after[
        (f"{name}_count", (("model", TINY),))]
