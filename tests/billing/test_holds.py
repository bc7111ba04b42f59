import threading

import pytest
from django.db import connection

from billing.models import Hold, UsageRecord
from billing.selectors import ledger_sum_micro
from billing.services import HoldReleased, InsufficientCredit, hold_place, hold_release, hold_settle
from core.money import Price
from tests.factories import make_key, make_org

pytestmark = pytest.mark.money

PRICE = Price(input_micro_per_mtok=1_000_000, output_micro_per_mtok=2_000_000)  # 1 and 2 micro-USD a token


def place(org, request_id="r1", prompt_tokens=10, max_tokens=20, key=None):
    return hold_place(organization=org, api_key=key, request_id=request_id, model_id="m",
                      prompt_tokens=prompt_tokens, max_tokens=max_tokens, price=PRICE)


def state(org):
    account = org.credit_account
    account.refresh_from_db()
    assert ledger_sum_micro(account=account) == account.balance_micro
    assert 0 <= account.held_micro <= account.balance_micro
    return account


@pytest.mark.django_db
def test_a_hold_reserves_the_most_the_request_can_cost():
    org = make_org("alice", credit_micro=1000)
    hold = place(org)
    assert hold.amount_micro == 10 * 1 + 20 * 2
    account = state(org)
    assert (account.balance_micro, account.held_micro, account.available_micro) == (1000, 50, 950)


@pytest.mark.django_db
def test_a_hold_that_cannot_be_covered_is_refused_and_reserves_nothing():
    org = make_org("alice", credit_micro=49)
    with pytest.raises(InsufficientCredit) as raised:
        place(org)
    assert raised.value.needed_micro == 50 and raised.value.available_micro == 49
    assert state(org).held_micro == 0
    assert not Hold.objects.exists()


@pytest.mark.django_db
def test_settling_charges_exact_usage_and_frees_the_rest():
    org = make_org("alice", credit_micro=1000)
    key, _ = make_key(org)
    hold = place(org, key=key)
    usage = hold_settle(hold=hold, prompt_tokens=10, completion_tokens=7, finish_reason="stop", latency_ms=12)
    account = state(org)
    assert usage.cost_micro == 10 + 14
    assert (account.balance_micro, account.held_micro) == (1000 - 24, 0)
    assert account.entries.first().amount_micro == -24
    assert (usage.organization, usage.api_key, usage.model_id, usage.status) == (org, key, "m", "completed")
    assert (usage.prompt_tokens, usage.completion_tokens, usage.latency_ms) == (10, 7, 12)
    assert Hold.objects.get(pk=hold.pk).status == "settled"


@pytest.mark.django_db
def test_settling_twice_charges_once():
    org = make_org("alice", credit_micro=1000)
    hold = place(org)
    first = hold_settle(hold=hold, prompt_tokens=10, completion_tokens=20)
    second = hold_settle(hold=hold, prompt_tokens=10, completion_tokens=20)
    assert first.pk == second.pk
    assert state(org).balance_micro == 950
    assert UsageRecord.objects.count() == 1


@pytest.mark.django_db
def test_a_failed_request_is_charged_only_for_generated_tokens():
    org = make_org("alice", credit_micro=1000)
    usage = hold_settle(hold=place(org), prompt_tokens=10, completion_tokens=3, status="failed")
    assert usage.cost_micro == 6
    assert state(org).balance_micro == 994


@pytest.mark.django_db
def test_releasing_frees_the_hold_without_a_charge():
    org = make_org("alice", credit_micro=1000)
    hold = place(org)
    assert hold_release(hold=hold) is True
    assert hold_release(hold=hold) is False
    account = state(org)
    assert (account.balance_micro, account.held_micro) == (1000, 0)
    assert account.entries.count() == 1


@pytest.mark.django_db
def test_a_released_hold_cannot_be_settled_afterwards():
    org = make_org("alice", credit_micro=1000)
    hold = place(org)
    hold_release(hold=hold)
    ledger = list(state(org).entries.values_list("pk", "kind", "amount_micro"))
    with pytest.raises(HoldReleased, match="the hold of request r1 was released") as refused:
        hold_settle(hold=hold, prompt_tokens=10, completion_tokens=20)
    assert refused.value.request_id == "r1"
    account = state(org)
    assert (account.balance_micro, account.held_micro) == (1000, 0)
    assert list(account.entries.values_list("pk", "kind", "amount_micro")) == ledger
    assert len(ledger) == 1  # the grant
    assert not UsageRecord.objects.filter(hold=hold).exists()
    assert Hold.objects.get(pk=hold.pk).status == Hold.Status.RELEASED


@pytest.mark.django_db
def test_holds_of_one_tenant_never_touch_another():
    alice, bob = make_org("alice", credit_micro=1000), make_org("bob", credit_micro=1000)
    hold_settle(hold=place(alice), prompt_tokens=10, completion_tokens=20)
    assert state(bob).balance_micro == 1000 and state(bob).held_micro == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", [2, 8])
def test_concurrent_holds_never_spend_the_same_credit(workers):
    # Each hold needs 50; the balance covers exactly one of them.
    org = make_org("alice", credit_micro=50 + 49)
    barrier = threading.Barrier(workers)
    results = []

    def attempt(i):
        try:
            barrier.wait()
            place(org, request_id=f"r{i}")
            results.append("held")
        except InsufficientCredit:
            results.append("402")
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["402"] * (workers - 1) + ["held"]
    account = state(org)
    assert account.held_micro == 50 and account.balance_micro == 99


@pytest.mark.django_db
def test_a_hold_reserves_every_prompt_token_at_the_input_price_and_records_the_cached_price():
    org = make_org("alice", credit_micro=1000)
    hold = place(org)
    assert hold.amount_micro == 10 * 1 + 20 * 2
    assert hold.cached_input_micro_per_mtok == PRICE.cached_input_micro_per_mtok == 500_000


@pytest.mark.django_db
def test_cached_prompt_tokens_are_charged_the_cached_price_exactly():
    org = make_org("alice", credit_micro=1000)
    usage = hold_settle(hold=place(org), prompt_tokens=10, completion_tokens=5, cached_tokens=7)
    # 3 uncached at 1, 7 cached at 0.5, 5 completion at 2: 16.5, rounded up once
    assert usage.cost_micro == 17
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (10, 7, 5)
    assert usage.cached_input_micro_per_mtok == 500_000
    account = state(org)
    assert (account.balance_micro, account.held_micro) == (1000 - 17, 0)
    assert account.entries.first().amount_micro == -17
    assert UsageRecord.objects.get(pk=usage.pk).cached_tokens == 7


@pytest.mark.django_db
def test_the_cached_price_is_the_one_fixed_when_the_hold_was_placed():
    org = make_org("alice", credit_micro=1000)
    hold = hold_place(organization=org, api_key=None, request_id="r1", model_id="m", prompt_tokens=10, max_tokens=20,
                      price=Price(1_000_000, 2_000_000, cached_input_micro_per_mtok=100_000))
    usage = hold_settle(hold=hold, prompt_tokens=10, completion_tokens=0, cached_tokens=10)
    assert usage.cost_micro == 1 and usage.cached_input_micro_per_mtok == 100_000
    assert state(org).balance_micro == 999


@pytest.mark.django_db
@pytest.mark.parametrize("prompt, completion, cached", [(10, 20, 0), (10, 20, 10), (10, 20, 3), (1, 20, 1), (10, 0, 9)])
def test_settling_with_cached_tokens_never_charges_more_than_the_hold(prompt, completion, cached):
    org = make_org("alice", credit_micro=1000)
    hold = place(org, prompt_tokens=prompt)
    usage = hold_settle(hold=hold, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    expected = -(-((prompt - cached) * 1_000_000 + cached * 500_000 + completion * 2_000_000) // 1_000_000)
    assert usage.cost_micro == expected <= hold.amount_micro
    assert state(org).balance_micro == 1000 - expected


@pytest.mark.django_db
@pytest.mark.parametrize("reported, billed_as", [(25, 10), (-4, 0)])
def test_a_cached_count_outside_the_prompt_is_brought_within_it_and_logged(caplog, reported, billed_as):
    org = make_org("alice", credit_micro=1000)
    with caplog.at_level("ERROR", logger="billing.services"):
        usage = hold_settle(hold=place(org), prompt_tokens=10, completion_tokens=0, cached_tokens=reported)
    assert usage.cached_tokens == billed_as
    assert usage.cost_micro == -(-((10 - billed_as) * 1_000_000 + billed_as * 500_000) // 1_000_000)
    assert state(org).balance_micro == 1000 - usage.cost_micro
    assert "cached" in caplog.text


@pytest.mark.django_db
def test_a_failed_request_is_charged_neither_its_prompt_nor_its_cached_tokens():
    org = make_org("alice", credit_micro=1000)
    usage = hold_settle(hold=place(org), prompt_tokens=10, completion_tokens=3, cached_tokens=6, status="failed")
    assert usage.cost_micro == 6 and usage.cached_tokens == 6
    assert state(org).balance_micro == 994
