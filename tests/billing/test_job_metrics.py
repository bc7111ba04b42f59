"""The billing jobs on /metrics: holds swept, Stripe events applied, reconciliation findings.

Here the jobs run in the test process, as in the embedded default (no REDIS_URL: the web process runs them);
tests/workers/test_job_metrics.py runs them on a real Celery worker, another process, through Redis.
"""
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from billing import liveness
from billing.models import Hold
from billing.tasks.holds import sweep_holds
from billing.tasks.payments import reconcile_stripe
from tests.billing.fake_stripe import deliver
from tests.billing.money import checkout
from tests.billing.test_holds import place
from tests.factories import make_org

pytestmark = pytest.mark.django_db


def scrape() -> dict:
    response = Client().get("/metrics")  # from 127.0.0.1: no token needed
    assert response.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


def delta(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture(autouse=True)
def clear_cache():
    cache.clear()
    yield
    cache.clear()


def _stale(hold):
    Hold.objects.filter(pk=hold.pk).update(created_at=timezone.now() - timedelta(seconds=61))


def test_holds_the_sweeper_settles_and_releases_are_counted_by_outcome(settings):
    settings.HOLD_STALE_AFTER_S = 60
    org = make_org("alice", credit_micro=10_000)
    before = scrape()
    assert ("platform_holds_swept_total", (("outcome", "released"),)) in before  # shown before anything happened

    _stale(place(org, "never-beat"))
    beaten = place(org, "beat-then-died", prompt_tokens=10, max_tokens=20)
    liveness.beat("beat-then-died", prompt_tokens=10, completion_tokens=3)
    cache.delete("billing:alive:beat-then-died")  # its process stopped beating
    _stale(beaten)
    alive = place(org, "still-running")
    liveness.beat("still-running", prompt_tokens=10, completion_tokens=1)
    _stale(alive)
    assert sweep_holds.delay().get() == {"settled": 1, "released": 1}
    middle = scrape()
    assert delta(before, middle, "platform_holds_swept_total", outcome="released") == 1
    assert delta(before, middle, "platform_holds_swept_total", outcome="settled") == 1
    assert middle[("platform_holds_in_flight", ())] == 1  # the live one

    assert sweep_holds.delay().get() == {"settled": 0, "released": 0}  # a run with nothing to do counts nothing
    assert delta(middle, scrape(), "platform_holds_swept_total", outcome="released") == 0


def test_webhook_and_reconciliation_events_are_counted_by_type_and_source_once(fake_stripe):
    org = make_org("alice")
    first, second = checkout(org, 10), checkout(org, 20)
    before = scrape()
    delivered = fake_stripe.complete_checkout(first.stripe_checkout_session_id)
    assert deliver(delivered).status_code == 200
    assert deliver(delivered).json()["duplicate"] is True  # Stripe delivering it again
    fake_stripe.complete_checkout(second.stripe_checkout_session_id)  # its webhook is lost
    result = reconcile_stripe.delay().get()
    after = scrape()

    events = "platform_stripe_events_applied_total"
    assert delta(before, after, events, type="checkout.session.completed", source="webhook") == 1
    missed = result["applied"]
    assert missed >= 1  # the second payment's events, found by reconciliation
    assert delta(before, after, events, type="checkout.session.completed", source="reconcile") == 1
    assert sum(value for (name, labels), value in after.items() if name == events and ("source", "reconcile") in labels) \
        - sum(value for (name, labels), value in before.items()
              if name == events and ("source", "reconcile") in labels) == missed
    findings = "platform_reconciliation_findings_total"
    assert delta(before, after, findings, kind="missed_event") == missed
    assert delta(before, after, findings, kind="failed_event") == 0


def test_a_stripe_that_cannot_be_read_is_a_finding(fake_stripe, settings):
    settings.STRIPE_SECRET_KEY = "sk_test_not_the_right_key"
    before = scrape()
    assert "error" in reconcile_stripe.delay().get()
    after = scrape()
    assert delta(before, after, "platform_reconciliation_findings_total", kind="list_error") == 1
    assert delta(before, after, "platform_reconciliation_findings_total", kind="missed_event") == 0
