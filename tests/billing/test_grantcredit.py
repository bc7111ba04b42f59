"""manage.py grantcredit: an operator grants credit to an organization by id or name, with a reason, on the ledger."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.services import organization_create
from billing.selectors import ledger_sum_micro

pytestmark = [pytest.mark.django_db, pytest.mark.money]


def grant(*args) -> str:
    out = StringIO()
    call_command("grantcredit", *args, stdout=out)
    return out.getvalue()


def test_by_name_in_any_case_it_posts_one_grant_with_the_reason():
    org = organization_create(name="Acme Labs")
    printed = grant("--org", "acme labs", "--usd", "12.50", "--reason", "ticket 42")
    account = org.credit_account
    account.refresh_from_db()
    assert account.balance_micro == 12_500_000 == ledger_sum_micro(account=account)
    entry = account.entries.get()
    assert (entry.kind, entry.amount_micro, entry.description) == ("grant", 12_500_000, "ticket 42")
    assert "Acme Labs" in printed and "$12.50" in printed


def test_by_id_it_adds_to_the_balance():
    org = organization_create(name="beta")
    grant("--org", str(org.pk), "--usd", "1", "--reason", "welcome")
    grant("--org", str(org.pk), "--usd", "2.5", "--reason", "apology")
    account = org.credit_account
    account.refresh_from_db()
    assert account.balance_micro == 3_500_000 == ledger_sum_micro(account=account)
    assert account.entries.count() == 2


@pytest.mark.parametrize("args, message", [
    (["--org", "nobody", "--usd", "1", "--reason", "x"], "no organization"),
    (["--org", "gamma", "--usd", "0", "--reason", "x"], "--usd"),
    (["--org", "gamma", "--usd", "-5", "--reason", "x"], "--usd"),
    (["--org", "gamma", "--usd", "1e999999", "--reason", "x"], "--usd"),
    (["--org", "gamma", "--usd", "nan", "--reason", "x"], "--usd"),
    (["--org", "gamma", "--usd", "1", "--reason", "   "], "--reason"),
])
def test_bad_input_is_refused_and_nothing_is_posted(args, message):
    org = organization_create(name="gamma")
    with pytest.raises(CommandError, match=message):
        grant(*args)
    assert org.credit_account.entries.count() == 0
