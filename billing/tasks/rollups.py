from celery import shared_task
from django.utils import timezone

from billing.rollups import rollup_recent


@shared_task(name="billing.rollup_usage")
def rollup_usage(days: int = 2) -> dict[str, int]:
    """Rebuild the daily usage rows of today and the days before it."""
    return rollup_recent(today=timezone.now().date(), days=days)
