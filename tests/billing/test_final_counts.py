"""The hold sweeper charges a request's final count when one is known (billing.final_counts), before it falls back
to the request's last heartbeat: a request that ended after the process that would have settled it died is charged
exactly what ran, prompt included, once."""
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from billing import final_counts, liveness
from billing.models import Hold, UsageRecord
from billing.services import hold_settle
from billing.sweeper import sweep_stale_holds
from tests.billing.test_holds import place, state
from tests.factories import make_org

pytestmark = [pytest.mark.money, pytest.mark.django_db]


class Source:
    """A final count source that knows what the test tells it, and what it was asked."""

    def __init__(self, counts=None, fail=False):
        self.counts = counts or {}
        self.fail = fail
        self.asked: list[list[str]] = []

    def __call__(self, request_ids):
        self.asked.append(list(request_ids))
        if self.fail:
            raise ConnectionError("the queue is down")
        return {rid: self.counts[rid] for rid in request_ids if rid in self.counts}


@pytest.fixture
def sources():
    cache.clear()
    added = []

    def add(source):
        final_counts.register(source)
        added.append(source)
        return source

    yield add
    for source in added:
        final_counts.unregister(source)
    cache.clear()


def _final(prompt, completion, cached=0, reason="cancelled", at_ms=0):
    return {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached,
            "finish_reason": reason, "finished_at_ms": at_ms}


def test_a_hold_with_a_final_count_is_charged_it_at_once_prompt_included_and_only_once(sources, settings):
    settings.HOLD_STALE_AFTER_S = 120
    org = make_org("alice", credit_micro=1000)
    hold = place(org, "ended", prompt_tokens=10, max_tokens=20)  # young, its heartbeat still alive
    place(org, "running", prompt_tokens=10, max_tokens=20)
    liveness.beat("ended", prompt_tokens=10, completion_tokens=3)
    ended_ms = int((hold.created_at.timestamp() + 2.5) * 1000)
    source = sources(Source({"ended": _final(10, 7, cached=4, at_ms=ended_ms)}))
    assert sweep_stale_holds() == {"settled": 1, "released": 0}
    assert sorted(source.asked[0]) == ["ended", "running"]
    record = UsageRecord.objects.get(request_id="ended")
    assert (record.status, record.finish_reason) == ("cancelled", "cancelled")
    assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens) == (10, 4, 7)
    assert record.cost_micro == 6 * 1 + 2 + 7 * 2  # PRICE: 1 a prompt token, half that cached, 2 a completion one
    assert abs(record.latency_ms - 2500) <= 1  # from the hold to the end the source reports (ms rounded)
    assert liveness.last_counts("ended") is None
    assert Hold.objects.get(request_id="running").status == Hold.Status.ACTIVE  # nothing known: left alone
    assert sweep_stale_holds() == {"settled": 0, "released": 0}
    account = state(org)
    assert (account.balance_micro, account.held_micro) == (1000 - 22, 10 + 40)


def test_a_final_count_that_ended_in_an_error_is_charged_its_generated_tokens_only(sources):
    org = make_org("alice", credit_micro=1000)
    place(org, "failed", prompt_tokens=10, max_tokens=20)
    sources(Source({"failed": _final(10, 5, reason="error")}))
    assert sweep_stale_holds() == {"settled": 1, "released": 0}
    record = UsageRecord.objects.get(request_id="failed")
    assert (record.status, record.prompt_tokens, record.completion_tokens, record.cost_micro) == ("failed", 10, 5, 10)
    assert state(org).balance_micro == 990


def test_a_request_settled_by_its_own_process_first_is_not_charged_again(sources):
    org = make_org("alice", credit_micro=1000)
    hold = place(org, "raced", prompt_tokens=10, max_tokens=20)
    hold_settle(hold=hold, prompt_tokens=10, completion_tokens=7, status=UsageRecord.Status.COMPLETED,
                finish_reason="length")
    sources(Source({"raced": _final(10, 7, reason="length")}))
    assert sweep_stale_holds() == {"settled": 0, "released": 0}
    assert UsageRecord.objects.filter(request_id="raced").count() == 1
    assert state(org).balance_micro == 1000 - 24


def test_a_failing_or_unusable_source_leaves_the_sweeper_to_the_heartbeats(sources, settings, caplog):
    settings.HOLD_STALE_AFTER_S = 60
    org = make_org("alice", credit_micro=1000)
    for request_id in ("dead", "garbled"):
        hold = place(org, request_id, prompt_tokens=10, max_tokens=20)
        Hold.objects.filter(pk=hold.pk).update(created_at=timezone.now() - timedelta(seconds=61))
        liveness.beat(request_id, prompt_tokens=10, completion_tokens=3)
        cache.delete(f"billing:alive:{request_id}")
    broken = sources(Source(fail=True))
    sources(Source({"garbled": {**_final(10, 7), "completion_tokens": -7}}))
    assert sweep_stale_holds() == {"settled": 2, "released": 0}
    assert broken.asked
    assert "final count source" in caplog.text and "unusable final counts of garbled" in caplog.text
    records = UsageRecord.objects.order_by("request_id")
    assert [(r.request_id, r.status, r.finish_reason, r.completion_tokens) for r in records] == [
        ("dead", "failed", "lost", 3), ("garbled", "failed", "lost", 3)]


def test_the_first_source_that_knows_a_request_wins():
    first, second = Source({"a": _final(1, 2)}), Source({"a": _final(9, 9), "b": _final(3, 4, reason="stop")})
    final_counts.register(first)
    final_counts.register(second)
    final_counts.register(first)  # once only
    try:
        found = final_counts.lookup(["a", "b", "c"])
    finally:
        final_counts.unregister(first)
        final_counts.unregister(second)
    assert (found["a"].prompt_tokens, found["a"].status) == (1, "cancelled")
    assert (found["b"].completion_tokens, found["b"].status) == (4, "completed")
    assert "c" not in found
    assert first.asked == [["a", "b", "c"]] and second.asked == [["b", "c"]]
