"""The usage page's requests as a CSV download, safe to open in a spreadsheet."""
import csv
from datetime import date

from django.http import HttpResponse

from billing.staff.tables import spreadsheet_safe
from core.money import usd_exact

# cached_tokens: of prompt_tokens, those served from the prefix cache (charged the cached input price).
HEADER = ["time_utc", "request_id", "key_name", "key_prefix", "model", "prompt_tokens", "cached_tokens",
          "completion_tokens", "cost_usd", "latency_ms", "status", "finish_reason"]


def row(record) -> list:
    key = record.api_key
    return [spreadsheet_safe(value) for value in (
        record.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"), record.request_id,
        key.name if key else "(deleted key)", key.prefix if key else "", record.model_id,
        record.prompt_tokens, record.cached_tokens, record.completion_tokens, usd_exact(record.cost_micro),
        record.latency_ms, record.status, record.finish_reason)]


def requests_csv(records, *, start: date, end: date) -> HttpResponse:
    """A header row, then one row per request of `records` (a queryset, read in chunks)."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{start:%Y%m%d}-{end:%Y%m%d}.csv"'
    writer = csv.writer(response)
    writer.writerow(HEADER)
    for record in records.iterator(chunk_size=2000):
        writer.writerow(row(record))
    return response
