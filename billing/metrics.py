"""Billing's Prometheus metrics (served with the web process's at /metrics):

  platform_tokens_total{model, kind}                settled prompt, cached (of the prompt) and completion tokens
  platform_requests_settled_total{model, status}    chat requests charged: completed, cancelled, failed
  platform_request_latency_seconds{model}           a chat request's end-to-end time, from its usage record
  platform_holds_in_flight                          credit holds of requests still running (read at scrape)
  platform_holds_swept_total{outcome}               holds the sweeper closed: settled (from the last heartbeat) or
                                                    released (the request died before its first heartbeat)
  platform_stripe_events_applied_total{type, source}  Stripe events applied once, by the webhook or by reconciliation
  platform_reconciliation_findings_total{kind}      what reconciliation found: missed_event (an event no webhook had
                                                    brought, applied now), failed_event (one that could not be
                                                    applied; the next run retries it), list_error (Stripe's event list
                                                    could not be read)

The last three are counted by jobs that run in Celery processes (the sweeper, reconciliation) or in any web process
(the webhook), yet are served by the web process. Neither of the two obvious ways fits them:

- read the database at scrape time: a hold the sweeper released looks like any other released hold, and the holds it
  settled are usage records with finish_reason "lost", a column without an index in the largest table; the
  reconciliation's failures leave no row at all;
- a metrics port on the Celery worker: its default prefork pool runs each task in a child process, whose counters a
  port in the parent never sees (short of prometheus_client's multiprocess mode and its shared directory).

So the jobs count into a tally that every process of the deployment shares, and the web process reads it when
scraped: with REDIS_URL set (the broker the jobs already use), one Redis hash per family (HINCRBY, HGETALL); without
it, this process's memory, since the embedded default runs the jobs in the web process itself (PERIODIC_IN_PROCESS,
eager tasks). The values are the deployment's, not the process's: every web process reports the same number, so
take max(), not sum(), across instances (platform/grafana/dashboard.json does). A Redis outage loses counts and
skips those families from the scrape; it never fails a job.
"""
import json
import logging
import threading
from collections import Counter as Tally

import redis
from django.conf import settings
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from billing.models import Hold

log = logging.getLogger(__name__)

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


class _SharedTally:
    """Counts by label values, shared by the deployment's processes (see the module's docstring)."""

    def __init__(self, name: str, labels: tuple[str, ...], known: tuple[tuple[str, ...], ...] = ()):
        self.key = f"platform:metrics:{name}"
        self.labels = labels
        self.known = known  # label values shown (at 0) before anything was counted: rate() has a start
        self._local: Tally = Tally()
        self._lock = threading.Lock()

    def add(self, values: tuple[str, ...], n: int = 1) -> None:
        if n <= 0:
            return
        field = json.dumps(list(values))
        client = _redis()
        if client is None:
            with self._lock:
                self._local[field] += n
            return
        try:
            client.hincrby(self.key, field, n)
        except redis.RedisError as exc:  # a metric must never fail the job that counts it
            log.warning("could not count %s %s: %s", self.key, values, exc)

    def read(self) -> dict[tuple[str, ...], int]:
        """{label values: count}; raises redis.RedisError when the shared tally cannot be read."""
        client = _redis()
        if client is None:
            with self._lock:
                raw = dict(self._local)
        else:
            raw = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in client.hgetall(self.key).items()}
        found = dict.fromkeys(self.known, 0)
        for field, count in raw.items():
            try:
                values = tuple(str(v) for v in json.loads(field))
            except (ValueError, TypeError):
                continue
            if len(values) == len(self.labels):
                found[values] = count
        return found

    def clear(self) -> None:
        """For tests: forget every count, here and in Redis."""
        with self._lock:
            self._local.clear()
        client = _redis()
        if client is not None:
            client.delete(self.key)


_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def _redis() -> redis.Redis | None:
    url = getattr(settings, "REDIS_URL", None)
    if not url:
        return None
    with _clients_lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return _clients[url]


MISSED_EVENT, FAILED_EVENT, LIST_ERROR = "missed_event", "failed_event", "list_error"
HOLDS_SWEPT = _SharedTally("holds_swept", ("outcome",), known=(("settled",), ("released",)))
STRIPE_EVENTS = _SharedTally("stripe_events_applied", ("type", "source"))
RECONCILIATION = _SharedTally("reconciliation_findings", ("kind",),
                              known=((MISSED_EVENT,), (FAILED_EVENT,), (LIST_ERROR,)))

_FAMILIES = (
    ("platform_holds_swept", "Credit holds the sweeper closed, by outcome (settled or released)", HOLDS_SWEPT),
    ("platform_stripe_events_applied", "Stripe events applied, by type and source (webhook or reconcile)",
     STRIPE_EVENTS),
    ("platform_reconciliation_findings",
     "What Stripe reconciliation found: missed_event, failed_event, list_error", RECONCILIATION),
)


def holds_swept(*, settled: int, released: int) -> None:
    """Called by the hold sweeper after each run."""
    HOLDS_SWEPT.add(("settled",), settled)
    HOLDS_SWEPT.add(("released",), released)


def stripe_event_applied(*, event_type: str, source: str) -> None:
    """Called once an event's effects are committed (the first time only: a duplicate is not counted)."""
    STRIPE_EVENTS.add((event_type[:100], source))


def reconciliation_found(kind: str, n: int = 1) -> None:
    RECONCILIATION.add((kind,), n)


class _Jobs:
    def describe(self):
        return []  # else registering it would run collect(), a Redis read, while the apps load

    def collect(self):
        for name, doc, tally in _FAMILIES:
            try:
                counts = tally.read()
            except redis.RedisError as exc:  # an outage must not break the scrape of everything else
                log.warning("could not read %s: %s", tally.key, exc)
                continue
            family = CounterMetricFamily(name, doc, labels=tally.labels)
            for values, count in sorted(counts.items()):
                family.add_metric(values, count)
            yield family


REGISTRY.register(_Jobs())
