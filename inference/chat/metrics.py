"""The chat lifecycle's Prometheus metrics (served with the web process's at /metrics, config/metrics.py):

  platform_time_to_first_token_seconds{model}   from the request's arrival to its first generated token handed to
                                                the response (streamed or whole, API and playground alike)

and the model an HTTP request asked for, so that config/metrics.py can count its answer by model: the request's
middleware opens `request_model()`, the lifecycle calls `label_model` once the catalogue knows the model. Only
catalogue ids become label values (a name nobody serves never makes a series of its own).
"""
from contextlib import contextmanager
from contextvars import ContextVar

from prometheus_client import Histogram

TIME_TO_FIRST_TOKEN = Histogram(
    "platform_time_to_first_token_seconds", "Time from a chat request's arrival to its first generated token",
    ["model"], buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80))

# One dict per HTTP request, shared (not copied) with the threads and tasks the request's view runs in.
_request_labels: ContextVar[dict | None] = ContextVar("platform_request_labels", default=None)


@contextmanager
def request_model():
    """Around one HTTP request: yields the dict where `label_model` leaves {"model": <catalogue id>}."""
    labels: dict = {}
    token = _request_labels.set(labels)
    try:
        yield labels
    finally:
        _request_labels.reset(token)


def label_model(model_id: str) -> None:
    """The current HTTP request is about this catalogue model (a no-op outside one, e.g. the playground's socket)."""
    labels = _request_labels.get()
    if labels is not None:
        labels["model"] = model_id


def first_token(model_id: str, seconds: float) -> None:
    TIME_TO_FIRST_TOKEN.labels(model_id).observe(max(0.0, seconds))
