"""Billing's Prometheus metrics (served with the web process's at /metrics):

  platform_tokens_total{model, kind}                settled prompt, cached (of the prompt) and completion tokens
  platform_requests_settled_total{model, status}    chat requests charged: completed, cancelled, failed
  platform_request_latency_seconds{model}           a chat request's end-to-end time, from its usage record
  platform_holds_in_flight                          credit holds of requests still running (read at scrape)
"""
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from billing.models import Hold

TOKENS = Counter("platform_tokens", "Tokens of settled chat requests, by model and kind", ["model", "kind"])
SETTLED = Counter("platform_requests_settled", "Chat requests charged, by model and outcome", ["model", "status"])
LATENCY = Histogram("platform_request_latency_seconds", "End-to-end time of settled chat requests", ["model"],
                    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320))


def record_settlement(*, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int, status: str,
                      latency_ms: int) -> None:
    """Called once a usage record is committed."""
    TOKENS.labels(model, "prompt").inc(prompt_tokens)
    TOKENS.labels(model, "cached").inc(cached_tokens)
    TOKENS.labels(model, "completion").inc(completion_tokens)
    SETTLED.labels(model, status).inc()
    if latency_ms:
        LATENCY.labels(model).observe(latency_ms / 1000)


class _Holds:
    def describe(self):
        return []  # else registering it would run collect(), a query, while the apps load

    def collect(self):
        family = GaugeMetricFamily("platform_holds_in_flight", "Credit holds of requests still running")
        try:
            family.add_metric([], Hold.objects.filter(status=Hold.Status.ACTIVE).count())
        except Exception:  # a database outage must not break the scrape of everything else
            return
        yield family


REGISTRY.register(_Holds())
