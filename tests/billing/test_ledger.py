import pytest
from django.db import IntegrityError, transaction

from billing.models import LedgerEntry, ModelPrice
from billing.selectors import ledger_sum_micro
from billing.services import InsufficientCredit, credit_grant, ledger_post
from core.money import Price, usd_to_micro
from tests.factories import make_org

pytestmark = [pytest.mark.django_db, pytest.mark.money]


def assert_consistent(org):
    account = org.credit_account
    account.refresh_from_db()
    assert ledger_sum_micro(account=account) == account.balance_micro
    last = account.entries.first()
    assert last is None or last.balance_after_micro == account.balance_micro
    return account


def test_every_grant_is_a_ledger_row_and_the_sum_is_the_balance():
    org = make_org("alice")
    for amount in (1, 999_999, 5_000_000):
        credit_grant(organization=org, amount_micro=amount)
        assert_consistent(org)
    assert org.credit_account.balance_micro == 6_000_000
    assert org.credit_account.entries.count() == 3


def test_a_debit_larger_than_the_balance_is_refused_and_changes_nothing():
    org = make_org("alice", credit_micro=100)
    with pytest.raises(InsufficientCredit):
        ledger_post(organization=org, kind=LedgerEntry.Kind.ADJUSTMENT, amount_micro=-101)
    account = assert_consistent(org)
    assert account.balance_micro == 100 and account.entries.count() == 1


def test_grants_must_be_positive():
    with pytest.raises(ValueError):
        credit_grant(organization=make_org("alice"), amount_micro=0)


def test_ledger_rows_cannot_be_changed_or_deleted():
    org = make_org("alice", credit_micro=100)
    entry = org.credit_account.entries.get()
    entry.amount_micro = 1_000_000
    with pytest.raises(TypeError):
        entry.save()
    with pytest.raises(TypeError):
        entry.delete()
    with pytest.raises(TypeError):
        LedgerEntry.objects.all().update(amount_micro=0)
    with pytest.raises(TypeError):
        LedgerEntry.objects.all().delete()
    assert_consistent(org)


def test_the_database_refuses_a_balance_below_the_holds():
    account = make_org("alice", credit_micro=100).credit_account
    account.held_micro = 101
    with pytest.raises(IntegrityError), transaction.atomic():
        account.save()


def test_the_database_refuses_a_negative_cached_input_price_and_takes_none_for_half():
    ModelPrice.objects.create(model_id="half", input_micro_per_mtok=3, output_micro_per_mtok=1)
    assert ModelPrice.objects.get(model_id="half").price().cached_input_micro_per_mtok == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelPrice.objects.create(model_id="m", input_micro_per_mtok=3, output_micro_per_mtok=1,
                                  cached_input_micro_per_mtok=-1)


def test_cost_is_exact_and_rounded_up_to_the_micro_usd():
    price = Price(input_micro_per_mtok=100_000, output_micro_per_mtok=200_000)
    # 24 * 0.1 + 36 * 0.2 = 9.6 micro-USD -> 10
    assert price.cost_micro(prompt_tokens=24, completion_tokens=36) == 10
    assert price.cost_micro(prompt_tokens=10, completion_tokens=0) == 1
    assert price.cost_micro(prompt_tokens=0, completion_tokens=0) == 0
    assert price.cost_micro(prompt_tokens=1_000_000, completion_tokens=1_000_000) == 300_000


@pytest.mark.parametrize("usd, micro", [("1", 1_000_000), ("0.000001", 1), ("12.5", 12_500_000), (3, 3_000_000)])
def test_usd_amounts_convert_exactly(usd, micro):
    assert usd_to_micro(usd) == micro
