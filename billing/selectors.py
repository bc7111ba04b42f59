"""Reads of money."""
from django.db.models import Sum

from billing.models import CreditAccount


def ledger_sum_micro(*, account: CreditAccount) -> int:
    return account.entries.aggregate(total=Sum("amount_micro"))["total"] or 0
