"""Threshold crossings of an organization's available balance: low-balance alerts and auto-recharge.

Each action is armed while the balance is above its threshold. The first caller to see the balance
under it disarms the action with one conditional UPDATE and only that caller queues the task, so
a crossing triggers it at most once however many requests settle at the same moment. A credit that
lifts the balance back over the threshold re-arms it.
"""
from celery import current_app
from django.db import transaction

from billing.models import BillingProfile, CreditAccount


def _queue(task_name: str, *args) -> None:
    """Queue a billing task by its name (billing/tasks/, registered by billing's AppConfig in every process),
    so these rules depend on no task module and the tasks may use them."""
    current_app.signature(task_name, args=args).delay()


def _profile(organization_id: int) -> dict | None:
    """The thresholds and armed flags of the organization's billing profile; None without one."""
    return BillingProfile.objects.filter(organization_id=organization_id).values(
        "low_balance_threshold_micro", "low_balance_armed", "auto_recharge_enabled", "auto_recharge_armed").first()


def _available(organization_id: int) -> int | None:
    row = CreditAccount.objects.filter(organization_id=organization_id).values("balance_micro", "held_micro").first()
    return None if row is None else row["balance_micro"] - row["held_micro"]


def _disarm(organization_id: int, armed_field: str, threshold_field: str, available: int, **extra) -> bool:
    return bool(BillingProfile.objects.filter(
        organization_id=organization_id, **{armed_field: True, f"{threshold_field}__gt": available}, **extra,
    ).update(**{armed_field: False}))


def balance_lowered(organization_id: int) -> None:
    """After a charge or a debit has committed: queue what a threshold crossing calls for."""
    profile = _profile(organization_id)
    if profile is None or not (profile["low_balance_armed"] and profile["low_balance_threshold_micro"]
                               or profile["auto_recharge_armed"] and profile["auto_recharge_enabled"]):
        return  # most organizations: nothing armed, nothing more to read
    available = _available(organization_id)
    if available is None:
        return
    if _disarm(organization_id, "low_balance_armed", "low_balance_threshold_micro", available):
        _queue("billing.low_balance_alert", organization_id)
    if _disarm(organization_id, "auto_recharge_armed", "auto_recharge_threshold_micro", available,
               auto_recharge_enabled=True):
        _queue("billing.auto_recharge", organization_id)


def balance_raised(organization_id: int) -> None:
    """After a credit has committed: re-arm the actions whose threshold the balance is back over."""
    profile = _profile(organization_id)
    if profile is None or profile["low_balance_armed"] and profile["auto_recharge_armed"]:
        return
    available = _available(organization_id)
    if available is None:
        return
    BillingProfile.objects.filter(organization_id=organization_id, low_balance_armed=False,
                                  low_balance_threshold_micro__lte=available).update(low_balance_armed=True)
    BillingProfile.objects.filter(organization_id=organization_id, auto_recharge_armed=False,
                                  auto_recharge_threshold_micro__lte=available).update(auto_recharge_armed=True)


# robust: the money has committed by then; a failing alert or charge is logged, never the caller's error.
def on_commit_lowered(organization_id: int) -> None:
    transaction.on_commit(lambda: balance_lowered(organization_id), robust=True)


def on_commit_raised(organization_id: int) -> None:
    transaction.on_commit(lambda: balance_raised(organization_id), robust=True)
