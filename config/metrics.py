"""The web process's Prometheus metrics, served at /metrics.

  platform_http_requests_total{route, method, status, model}  every answer, by URL pattern; model is the catalogue id
                                                             the request named (402, 429, 503 included), "" where
                                                             none is known yet (a 401, an rpm 429 counted before
                                                             the body is read, an unknown model's 404, other routes)
  platform_http_request_duration_seconds{route}              until the response starts (a stream's first byte)
  platform_time_to_first_token_seconds{model}                the chat lifecycle's (inference/chat/metrics.py)
  and billing's (billing/metrics.py): tokens, settled requests, their latency, holds in flight, holds swept,
  Stripe events applied, reconciliation findings

Who may read them: with METRICS_TOKEN set, a request bearing it; else clients on this host only.
"""
import hmac
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

from billing import metrics as _billing_metrics  # noqa: F401  (registers billing's metrics)
from config.middleware import ResponseMiddleware
from inference.chat.metrics import request_model

REQUESTS = Counter("platform_http_requests", "HTTP answers by URL pattern, method, status and model",
                   ["route", "method", "status", "model"])
DURATION = Histogram("platform_http_request_duration_seconds", "Time until the response starts, by URL pattern",
                     ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
LOOPBACK = {"127.0.0.1", "::1"}




class MetricsMiddleware(ResponseMiddleware):
    """Counts every answer by its URL pattern (not its path: ids would make one series each) and its model."""

    def __call__(self, request):
        if self._async:
            return self._acall(request)
        with request_model() as labels:
            request.metrics_labels = labels
            return super().__call__(request)

    async def _acall(self, request):
        with request_model() as labels:
            request.metrics_labels = labels
            return await super()._acall(request)

    def process(self, request, response, started):
        match = getattr(request, "resolver_match", None)
        route = f"/{match.route}" if match is not None and match.route else "unmatched"
        model = getattr(request, "metrics_labels", {}).get("model", "")
        REQUESTS.labels(route, request.method, str(response.status_code), model).inc()
        DURATION.labels(route).observe(time.perf_counter() - started)
        return response


async def metrics(request):
    token = getattr(settings, "METRICS_TOKEN", None)
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JsonResponse({"error": "metrics need the METRICS_TOKEN as a bearer token"}, status=401)
    elif request.META.get("REMOTE_ADDR") not in LOOPBACK:
        return JsonResponse({"error": "metrics are served to this host only unless METRICS_TOKEN is set"},
                            status=403)
    body = await sync_to_async(generate_latest)(REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
