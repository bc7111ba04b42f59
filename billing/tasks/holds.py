from celery import shared_task

from billing.sweeper import sweep_stale_holds


@shared_task(name="billing.sweep_holds")
def sweep_holds() -> dict:
    """Settle or release holds whose request died with its process."""
    return sweep_stale_holds()
