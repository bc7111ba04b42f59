"""Stripe tasks: auto-recharge (queued by billing.triggers) and periodic reconciliation (beat schedule)."""
from celery import shared_task

from billing.stripe.recharge import auto_recharge_run
from billing.stripe.reconcile import reconcile_events


@shared_task(name="billing.auto_recharge")
def auto_recharge(organization_id: int) -> str:
    return auto_recharge_run(organization_id=organization_id)


@shared_task(name="billing.reconcile_stripe")
def reconcile_stripe() -> dict:
    return reconcile_events()
