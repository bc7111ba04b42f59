"""/metrics: what a Prometheus scraping a web process sees, and who may read it."""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import TINY, wait_for_usage

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
    assert value(after, "platform_http_requests_total", route=route, method="POST", status="200") \
        - value(before, "platform_http_requests_total", route=route, method="POST", status="200") == 1
    assert value(after, "platform_http_requests_total", route=route, method="POST", status="401") \
        - value(before, "platform_http_requests_total", route=route, method="POST", status="401") == 1
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
