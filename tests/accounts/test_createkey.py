from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Organization
from accounts.selectors import api_key_authenticate
from billing.selectors import ledger_sum_micro

pytestmark = [pytest.mark.django_db, pytest.mark.money]


def createkey(*args) -> str:
    out = StringIO()
    call_command("createkey", *args, stdout=out)
    return out.getvalue()


def test_it_creates_the_org_grants_credit_and_prints_the_key_alone():
    printed = createkey("--org", "acme", "--credit-usd", "12.5")
    secret = printed.strip()
    assert printed == secret + "\n"
    key = api_key_authenticate(secret)
    assert key.organization.name == "acme"
    account = key.organization.credit_account
    assert account.balance_micro == 12_500_000
    assert ledger_sum_micro(account=account) == 12_500_000
    assert account.entries.get().kind == "grant"


def test_a_second_key_reuses_the_org_and_adds_credit():
    first = createkey("--org", "acme", "--credit-usd", "1").strip()
    second = createkey("--org", "acme", "--credit-usd", "2").strip()
    assert first != second
    assert Organization.objects.filter(name="acme").count() == 1
    account = Organization.objects.get(name="acme").credit_account
    assert account.balance_micro == 3_000_000 == ledger_sum_micro(account=account)


@pytest.mark.parametrize("amount", ["-1", "abc", "0.0000001", "nan", "inf"])
def test_bad_credit_amounts_are_refused_and_create_nothing(amount):
    with pytest.raises(CommandError):
        createkey("--org", "acme", "--credit-usd", amount)
    assert not Organization.objects.exists()


def test_demokey_grants_credit_only_once():
    out = StringIO()
    call_command("demokey", stdout=out)
    call_command("demokey", stdout=out)
    keys = out.getvalue().split()
    assert len(keys) == 2 and all(api_key_authenticate(k) for k in keys)
    account = Organization.objects.get(name="demo").credit_account
    assert account.balance_micro == 5_000_000 == ledger_sum_micro(account=account)
