from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.auth import api_key_authenticate
from accounts.models import Organization
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


def demokey(*args) -> str:
    out = StringIO()
    call_command("demokey", *args, stdout=out)
    return out.getvalue()


def printed_key(text: str) -> str:
    return next(line.split()[2] for line in text.splitlines() if line.startswith("API key:"))


def test_demokey_grants_credit_only_once_and_prints_a_working_key_each_time():
    first, second = printed_key(demokey()), printed_key(demokey())
    assert first != second and all(api_key_authenticate(k) for k in (first, second))
    account = Organization.objects.get(name="demo").credit_account
    assert account.balance_micro == 5_000_000 == ledger_sum_micro(account=account)


def test_demokey_prints_an_owner_login_once_then_how_to_reset_it():
    from django.contrib.auth import authenticate

    from accounts.models import Membership

    text = demokey("--url", "http://127.0.0.1:8000")
    login = next(line for line in text.splitlines() if line.startswith("Login:"))
    email, password = login.split()[1], login.split()[3]
    user = authenticate(email=email, password=password)
    assert user is not None
    assert Membership.objects.get(user=user).organization.name == "demo"
    assert Membership.objects.get(user=user).role == "owner"
    assert "Dashboard:  http://127.0.0.1:8000/" in text and "$5.00 of credit" in text
    assert f"curl http://127.0.0.1:8000/v1/chat/completions -H 'Authorization: Bearer {printed_key(text)}'" in text

    again = demokey()
    assert password not in again and f"changepassword {email}" in again
    assert authenticate(email=email, password=password) == user  # the password stays what was printed


def test_demokey_key_only_prints_the_key_alone():
    text = demokey("--key-only")
    assert text.count("\n") == 1 and api_key_authenticate(text.strip())
