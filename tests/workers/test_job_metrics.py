"""A billing job run by a real Celery worker (another process) shows on the web process's /metrics, through Redis."""
import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from billing import metrics
from billing.models import Hold
from billing.services import hold_place
from core.money import Price
from tests.factories import make_org
from tests.poll import wait_until
from tests.workers.test_celery import _call, celery_env, celery_worker  # noqa: F401  (fixtures)


def swept(outcome: str) -> float:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return next((s.value for family in text_string_to_metric_families(response.content.decode())
                 for s in family.samples
                 if s.name == "platform_holds_swept_total" and s.labels == {"outcome": outcome}), 0.0)


@pytest.fixture
def shared_tally(settings, redis_url):
    """This (web) process reads the jobs' counts from the run's Redis, as a scaled-out deployment does."""
    settings.REDIS_URL = redis_url
    metrics.HOLDS_SWEPT.clear()
    yield
    metrics.HOLDS_SWEPT.clear()


def test_holds_a_celery_worker_swept_are_counted_on_the_web_processes_metrics(celery_env, celery_worker,
                                                                              shared_tally):
    org = make_org("alice", credit_micro=1000)
    hold = hold_place(organization=org, api_key=None, request_id="died-early", model_id="m", prompt_tokens=1,
                      max_tokens=1, price=Price(1_000_000, 1_000_000))
    Hold.objects.filter(pk=hold.pk).update(created_at=timezone.now() - timezone.timedelta(hours=1))
    assert swept("released") == 0

    _call(celery_env, "billing.sweep_holds")
    wait_until(lambda: Hold.objects.get(pk=hold.pk).status == Hold.Status.RELEASED, timeout=120,
               message="the Celery worker to release the dead request's hold")
    wait_until(lambda: swept("released") == 1, timeout=10, message="the web process to see the worker's count")
    assert swept("settled") == 0
