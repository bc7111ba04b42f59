"""The usage page: a range of UTC days, charts per day, breakdowns by model and key, the requests, a CSV.

Totals, charts and breakdowns are the billing API's aggregation (billing.api.usage), so the page and
GET /api/billing/usage always agree; the requests table and the CSV read the same usage records over the
same days. Everything is the current organization's only.
"""
from datetime import date, datetime, time, timedelta, timezone
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import HttpResponseBadRequest
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.web.decorators import member_required
from billing.api.usage import usage_summary
from billing.models import MICRO_USD, UsageRecord
from billing.web.charts import Series, bar_chart
from billing.web.export import requests_csv
from billing.web.forms import DEFAULT_RANGE, QUICK_RANGES, UsageRangeForm
from core.money import usd

REQUESTS_PER_PAGE = 50
PROMPT, COMPLETION, SPEND = Series("prompt", "#1d4ed8"), Series("completion", "#93c5fd"), Series("spend", "#047857")


def records_between(organization, start: date, end: date):
    """The organization's usage records from `start` to `end`, both UTC days included, newest first."""
    since = datetime.combine(start, time.min, tzinfo=timezone.utc)
    return (UsageRecord.objects.filter(organization=organization, created_at__gte=since,
                                       created_at__lt=since + timedelta(days=(end - start).days + 1))
            .select_related("api_key").order_by("-created_at", "-id"))


def compact(count: int) -> str:
    """1,500 -> 1.5k; 2,500,000 -> 2.5M: tick labels short enough for a phone."""
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if count >= size:
            return f"{count / size:g}{suffix}"
    return str(count)


def usd_tick(micro: int) -> str:
    """$0.005, $2.50, $20k: a spend axis label."""
    return f"${compact(micro // MICRO_USD)}" if micro >= 1000 * MICRO_USD else usd(micro)


def charts(days: list[dict]) -> list:
    """Tokens (prompt and completion stacked) and spend per day, each bar's tooltip with its requests."""
    dates = [date.fromisoformat(row["day"]) for row in days]
    requests = {day: row["requests"] for day, row in zip(dates, days)}

    def counted(day: date) -> str:
        return f"{requests[day]:,} request{'' if requests[day] == 1 else 's'}"

    tokens = bar_chart(
        id="chart-tokens", title="Tokens per day", unit="tokens per day", days=dates,
        values=[(row["prompt_tokens"], row["completion_tokens"]) for row in days], series=[PROMPT, COMPLETION],
        describe=lambda day, v: (f"{day:%b %d, %Y}: {sum(v):,} tokens ({v[0]:,} prompt, {v[1]:,} completion), "
                                 f"{counted(day)}"),
        tick_label=compact)
    spend = bar_chart(
        id="chart-spend", title="Spend per day", unit="USD per day", days=dates,
        values=[(row["cost_micro"],) for row in days], series=[SPEND],
        describe=lambda day, v: f"{day:%b %d, %Y}: {usd(v[0])}, {counted(day)}", tick_label=usd_tick)
    return [tokens, spend]


def _breakdown(rows: list[dict], label) -> list[dict]:
    """Rows with their label, cost in USD and share of the range's spend (`bar`: percent of the largest)."""
    total = sum(row["cost_micro"] for row in rows)
    top = max((row["cost_micro"] for row in rows), default=0)
    return [{**row, "label": label(row), "tokens": row["prompt_tokens"] + row["completion_tokens"],
             "cost": usd(row["cost_micro"]),
             "share": f"{100 * row['cost_micro'] / total:.1f}%" if total else "–",
             "bar": round(100 * row["cost_micro"] / top) if top else 0} for row in rows]


def _key_label(row: dict) -> str:
    key = row["key"]
    return "(deleted key)" if key is None else f"{key['name']} ({key['prefix']}…)"


def _window_query(start: date, end: date, chosen: str) -> str:
    return urlencode({"range": chosen} if chosen != "custom" else {"start": start, "end": end})


@member_required
@require_GET
def usage_page(request):
    form = UsageRangeForm(request.GET)
    start, end, chosen = form.window()
    organization = request.organization
    by_day = usage_summary(organization=organization, start=start, end=end, group_by="day")
    by_model = usage_summary(organization=organization, start=start, end=end, group_by="model")["data"]
    by_key = usage_summary(organization=organization, start=start, end=end, group_by="key")["data"]
    total = by_day["total"]
    page = Paginator(records_between(organization, start, end), REQUESTS_PER_PAGE).get_page(request.GET.get("page"))
    for record in page:
        record.cost = usd(record.cost_micro)
    return render(request, "dashboard/usage/page.html", {
        "form": form, "start": start, "end": end, "chosen": chosen, "quick_ranges": QUICK_RANGES.items(),
        "default_days": DEFAULT_RANGE,
        "window_query": _window_query(start, end, chosen),
        "total": {**total, "tokens": total["prompt_tokens"] + total["completion_tokens"],
                  "cost": usd(total["cost_micro"])},
        "charts": charts(by_day["data"]),
        "by_model": _breakdown(by_model, lambda row: row["model"]),
        "by_key": _breakdown(by_key, _key_label),
        "page_obj": page,
    })


@member_required
@require_GET
def usage_csv(request):
    form = UsageRangeForm(request.GET)
    if not form.is_valid():
        problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())
        return HttpResponseBadRequest(f"Choose a valid range of days ({problems}).\n",
                                      content_type="text/plain; charset=utf-8")
    start, end, _ = form.window()
    return requests_csv(records_between(request.organization, start, end), start=start, end=end)
