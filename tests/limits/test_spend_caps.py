"""Per-key spend caps checked with the hold: usage in the window plus holds in flight, reset on time."""
import threading
from datetime import UTC, datetime

import pytest
from django.db import connection

from accounts.models import SpendWindow
from billing.models import Hold
from billing.services import InsufficientCredit, hold_place, hold_release, hold_settle
from billing.spend import SpendCapReached, spent_micro, window_bounds
from core.money import Price
from tests.factories import make_key, make_org

pytestmark = pytest.mark.money

PRICE = Price(input_micro_per_mtok=1_000_000, output_micro_per_mtok=2_000_000)  # each hold below: 10 + 20 × 2 = 50


def place(org, key, request_id):
    return hold_place(organization=org, api_key=key, request_id=request_id, model_id="m", prompt_tokens=10,
                      max_tokens=20, price=PRICE)


def capped_key(org, cap_micro, window=SpendWindow.DAY, name="capped"):
    key, _ = make_key(org, name=name)
    key.spend_cap_micro, key.spend_cap_window = cap_micro, window
    key.save(update_fields=["spend_cap_micro", "spend_cap_window"])
    return key


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("window, at, start, end", [
    (SpendWindow.DAY, utc(2024, 2, 29, 23, 59, 59), utc(2024, 2, 29), utc(2024, 3, 1)),
    (SpendWindow.WEEK, utc(2024, 3, 3, 12), utc(2024, 2, 26), utc(2024, 3, 4)),  # a Sunday: its Monday was 26 Feb
    (SpendWindow.WEEK, utc(2024, 3, 4), utc(2024, 3, 4), utc(2024, 3, 11)),  # Monday midnight starts a week
    (SpendWindow.MONTH, utc(2024, 2, 10), utc(2024, 2, 1), utc(2024, 3, 1)),
    (SpendWindow.MONTH, utc(2024, 12, 31, 23), utc(2024, 12, 1), utc(2025, 1, 1)),
])
def test_windows_are_utc_calendar_days_iso_weeks_and_months(window, at, start, end):
    assert window_bounds(window, at) == (start, end)


@pytest.mark.django_db
def test_holds_in_flight_and_usage_of_the_window_count_against_the_cap(clock):
    org = make_org("alice", credit_micro=10_000)
    key = capped_key(org, 120)
    settled = place(org, key, "r1")
    hold_settle(hold=settled, prompt_tokens=10, completion_tokens=5)  # costs 20
    place(org, key, "r2")  # 50 in flight
    assert spent_micro(api_key_id=key.pk, since=window_bounds("day", clock.now_utc())[0]) == 70
    place(org, key, "r3")  # 120: exactly the cap
    with pytest.raises(SpendCapReached) as refused:
        place(org, key, "r4")
    assert (refused.value.cap_micro, refused.value.spent_micro, refused.value.needed_micro) == (120, 120, 50)
    assert refused.value.window == "day"
    assert not Hold.objects.filter(request_id="r4").exists()
    account = org.credit_account
    account.refresh_from_db()
    assert account.held_micro == 100  # the refused hold reserved nothing


@pytest.mark.django_db
def test_a_released_hold_frees_its_share_of_the_cap_and_other_keys_are_not_counted(clock):
    org = make_org("alice", credit_micro=10_000)
    key = capped_key(org, 50)
    free_key, _ = make_key(org, name="uncapped")
    for i in range(3):
        hold_settle(hold=place(org, free_key, f"free{i}"), prompt_tokens=10, completion_tokens=20)
    first = place(org, key, "r1")
    with pytest.raises(SpendCapReached):
        place(org, key, "r2")
    hold_release(hold=first)
    place(org, key, "r3")


@pytest.mark.django_db
def test_the_credit_check_still_applies_under_the_cap(clock):
    org = make_org("alice", credit_micro=40)
    with pytest.raises(InsufficientCredit):
        place(org, capped_key(org, 1_000), "r1")


@pytest.mark.django_db
@pytest.mark.parametrize("window", [SpendWindow.DAY, SpendWindow.WEEK, SpendWindow.MONTH])
def test_a_cap_resets_when_its_window_ends_and_not_before(window, clock):
    org = make_org("alice", credit_micro=10_000)
    key = capped_key(org, 50, window)
    hold_settle(hold=place(org, key, "r1"), prompt_tokens=10, completion_tokens=20)
    _, end = window_bounds(window, clock.now_utc())
    clock.freeze(end.timestamp() - 1)
    with pytest.raises(SpendCapReached) as refused:
        place(org, key, "r2")
    assert refused.value.resets_at == end and refused.value.retry_after_s == 1
    clock.freeze(end.timestamp())
    place(org, key, "r3")
    with pytest.raises(SpendCapReached) as refused:
        place(org, key, "r4")  # the new window's cap is spent by r3's hold
    assert refused.value.resets_at == window_bounds(window, end)[1]


@pytest.mark.django_db(transaction=True)
def test_concurrent_holds_never_take_a_key_past_its_cap(clock):
    org = make_org("alice", credit_micro=1_000_000)
    key = capped_key(org, 10 * 50)  # covers 10 holds of 50
    workers = 40
    barrier = threading.Barrier(workers)
    outcomes = []

    def attempt(i):
        try:
            barrier.wait()
            place(org, key, f"r{i}")
            outcomes.append("held")
        except SpendCapReached:
            outcomes.append("capped")
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["capped"] * 30 + ["held"] * 10
    assert Hold.objects.filter(api_key=key, status=Hold.Status.ACTIVE).count() == 10
    account = org.credit_account
    account.refresh_from_db()
    assert account.held_micro == 500
