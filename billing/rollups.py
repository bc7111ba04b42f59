"""Daily usage per organization, key and model, rebuilt from the usage records.

A day's rows are recomputed whole, in one transaction: running a rollup again (or late, after
more records arrived) gives the same rows as running it once at the end of the day.
"""
from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.db.models import Count, Sum

from billing.models import UsageDaily, UsageRecord


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


@transaction.atomic
def rollup_day(day: date) -> int:
    """Rebuild the day's rows; how many there are."""
    start, end = day_bounds(day)
    groups = (UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
              .values("organization_id", "api_key_id", "model_id")
              .annotate(requests=Count("id"), prompt_tokens=Sum("prompt_tokens"),
                        completion_tokens=Sum("completion_tokens"), cost_micro=Sum("cost_micro"))
              .order_by("organization_id", "api_key_id", "model_id"))
    UsageDaily.objects.filter(day=day).delete()
    rows = UsageDaily.objects.bulk_create(UsageDaily(day=day, **group) for group in groups)
    return len(rows)


def rollup_recent(*, today: date, days: int = 2) -> dict[str, int]:
    """Rebuild today and the days before it (yesterday's last records land after midnight)."""
    return {str(today - timedelta(days=k)): rollup_day(today - timedelta(days=k)) for k in range(days)}
