"""The hold sweeper: holds whose request died are settled from their last heartbeat, or released."""
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from billing import liveness
from billing.models import Hold, UsageRecord
from billing.sweeper import sweep_stale_holds
from billing.tasks.holds import sweep_holds
from tests.billing.test_holds import place, state
from tests.factories import make_org

pytestmark = [pytest.mark.money, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def clear_cache():
    cache.clear()
    yield
    cache.clear()


def _age(hold, seconds):
    Hold.objects.filter(pk=hold.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))


def _lapse(request_id):
    """The process stopped beating: its alive entry expired, its last counts remain."""
    cache.delete(f"billing:alive:{request_id}")


def test_a_hold_whose_request_died_before_any_heartbeat_is_released(settings):
    settings.HOLD_STALE_AFTER_S = 60
    org = make_org("alice", credit_micro=1000)
    _age(place(org, "dead"), 61)
    assert sweep_stale_holds() == {"settled": 0, "released": 1}
    account = state(org)
    assert (account.balance_micro, account.held_micro) == (1000, 0)
    assert Hold.objects.get(request_id="dead").status == Hold.Status.RELEASED


def test_a_dead_request_is_charged_the_tokens_of_its_last_heartbeat(settings):
    settings.HOLD_STALE_AFTER_S = 60
    org = make_org("alice", credit_micro=1000)
    hold = place(org, "dead", prompt_tokens=10, max_tokens=20)
    liveness.beat("dead", prompt_tokens=10, completion_tokens=7)
    _lapse("dead")
    _age(hold, 61)
    assert sweep_holds.delay().get() == {"settled": 1, "released": 0}
    record = UsageRecord.objects.get(request_id="dead")
    # As for any failed request: the generated tokens are charged, the prompt is not.
    assert (record.status, record.finish_reason, record.completion_tokens) == ("failed", "lost", 7)
    assert record.cost_micro == 14
    account = state(org)
    assert (account.balance_micro, account.held_micro) == (986, 0)
    assert liveness.last_counts("dead") is None
    assert sweep_stale_holds() == {"settled": 0, "released": 0}  # nothing charged twice
    assert state(org).balance_micro == 986


def test_live_and_young_holds_are_left_alone(settings):
    settings.HOLD_STALE_AFTER_S = 60
    org = make_org("alice", credit_micro=10_000)
    long_running = place(org, "long")
    liveness.beat("long", prompt_tokens=10, completion_tokens=3)
    _age(long_running, 3600)  # an hour old, but it beat a moment ago
    place(org, "young")  # no heartbeat yet, but only just placed
    assert sweep_stale_holds() == {"settled": 0, "released": 0}
    assert set(Hold.objects.values_list("status", flat=True)) == {"active"}
    assert state(org).held_micro == 2 * 50


def test_a_request_that_settles_itself_after_the_sweep_is_not_charged_twice(settings):
    from billing.services import hold_settle

    settings.HOLD_STALE_AFTER_S = 60
    org = make_org("alice", credit_micro=1000)
    hold = place(org, "late")
    liveness.beat("late", prompt_tokens=10, completion_tokens=5)
    _lapse("late")
    _age(hold, 61)
    sweep_stale_holds()
    record = hold_settle(hold=hold, prompt_tokens=10, completion_tokens=20)  # its process comes back
    assert record.finish_reason == "lost" and record.completion_tokens == 5
    assert state(org).balance_micro == 990
