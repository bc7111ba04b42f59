"""An organization's usage over a range of UTC days, summed from its usage records.

Read live from UsageRecord rather than the UsageDaily rollup, so the figures are exact to the last request
and agree with the ledger's usage entries.
"""
from datetime import date, datetime, time, timedelta, timezone

from django.db.models import Count, F, Sum
from django.db.models.functions import TruncDate

from accounts.models import Organization
from billing.models import UsageRecord
from core.serializers import usd

GROUPS = {
    "day": ("day",),
    "model": ("model_id",),
    "key": ("api_key_id", "api_key__name", "api_key__prefix"),
    "day_model": ("day", "model_id"),
}
ORDER = {"day": ("day",), "model": ("model_id",), "key": (F("api_key_id").asc(nulls_last=True),),
         "day_model": ("day", "model_id")}


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def _figures(row: dict) -> dict:
    cost = row["cost_micro"] or 0
    return {
        "requests": row["requests"] or 0,
        "prompt_tokens": row["prompt_tokens"] or 0,
        "cached_tokens": row["cached_tokens"] or 0,
        "completion_tokens": row["completion_tokens"] or 0,
        "cost_micro": cost,
        "cost_usd": usd(cost),
    }


def _label(row: dict, group_by: str) -> dict:
    out = {}
    if "day" in GROUPS[group_by]:
        out["day"] = row["day"].isoformat()
    if "model_id" in GROUPS[group_by]:
        out["model"] = row["model_id"]
    if group_by == "key":
        key_id = row["api_key_id"]
        out["key"] = None if key_id is None else {
            "id": key_id, "name": row["api_key__name"], "prefix": row["api_key__prefix"]}
    return out


def _empty_days(rows: list[dict], start: date, end: date) -> list[dict]:
    """Every day of the range, with zeros where nothing was used, so a chart has no gaps."""
    by_day = {row["day"]: row for row in rows}
    zero = {"day": None, **_figures(dict.fromkeys(
        ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_micro"), 0))}
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return [by_day.get(day.isoformat(), {**zero, "day": day.isoformat()}) for day in days]


def usage_summary(*, organization: Organization, start: date, end: date, group_by: str) -> dict:
    """Requests, tokens and cost from `start` to `end` (inclusive UTC days), grouped one way."""
    records = UsageRecord.objects.filter(
        organization=organization, created_at__gte=_midnight(start), created_at__lt=_midnight(end + timedelta(days=1)),
    ).annotate(day=TruncDate("created_at", tzinfo=timezone.utc))
    sums = {
        "requests": Count("id"),
        "prompt_tokens": Sum("prompt_tokens"),
        "cached_tokens": Sum("cached_tokens"),
        "completion_tokens": Sum("completion_tokens"),
        "cost_micro": Sum("cost_micro"),
    }
    grouped = records.values(*GROUPS[group_by]).annotate(**sums).order_by(*ORDER[group_by])
    rows = [{**_label(row, group_by), **_figures(row)} for row in grouped]
    # Every grouping partitions the range's records, so the total is the sum of the rows.
    total = _figures({name: sum(row[name] for row in rows) for name in sums})
    if group_by == "day":
        rows = _empty_days(rows, start, end)
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "group_by": group_by,
        "data": rows,
        "total": total,
    }
