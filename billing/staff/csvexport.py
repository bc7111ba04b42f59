"""A table as a CSV download: a header row, then exact values (USD to the micro, ISO times, ages in seconds)."""
import csv

from django.http import HttpResponse

from billing.staff.queries import Window
from billing.staff.tables import Table


def csv_response(table: Table, window: Window) -> HttpResponse:
    filename = f"billing-{table.name}-{window.days}d-{window.until:%Y%m%d}.csv"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    csv.writer(response).writerows(table.csv_rows())
    return response
