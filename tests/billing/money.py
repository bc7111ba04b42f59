"""Helpers of the Stripe tests: a Checkout top-up and a balance that must equal its ledger."""
from billing.models import Payment
from billing.selectors import ledger_sum_micro
from billing.stripe.checkout import topup_session_create

USD = 1_000_000


def checkout(org, usd=25) -> Payment:
    payment, _ = topup_session_create(organization=org, amount_micro=usd * USD, created_by=None,
                                      success_url="https://app.example.com/ok", cancel_url="https://app.example.com/")
    return payment


def balance(org) -> int:
    """The organization's balance, checked against the sum of its ledger."""
    account = org.credit_account
    account.refresh_from_db()
    assert ledger_sum_micro(account=account) == account.balance_micro
    return account.balance_micro
