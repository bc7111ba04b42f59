"""The staff billing page and its CSV exports: for staff who may read the ledger, never for customers."""
from functools import wraps

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.staff.csvexport import csv_response
from billing.staff.queries import DEFAULT_DAYS, RANGES, TABLES, Window

PERMISSION = "billing.view_ledgerentry"


def _billing_staff_only(view):
    """Anonymous and non-staff users go to the admin login; staff who may not read the ledger get 403."""
    @staff_member_required(login_url="admin:login")
    @require_GET
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.has_perm(PERMISSION):
            raise PermissionDenied("Viewing billing needs the permission to view ledger entries.")
        return view(request, *args, **kwargs)
    return wrapped


def _days(request) -> int | None:
    raw = request.GET.get("days")
    if raw is None:
        return DEFAULT_DAYS
    return int(raw) if raw in {str(d) for d in RANGES} else None


@_billing_staff_only
def billing_page(request):
    days = _days(request)
    notice = ""
    if days is None:
        notice = f"There is no {request.GET['days'][:20]}-day range; showing the last {DEFAULT_DAYS} days."
        days = DEFAULT_DAYS
    window = Window.last(days)
    return render(request, "billing/staff/page.html", {
        "window": window, "ranges": RANGES, "notice": notice,
        "tables": [build(window) for build in TABLES.values()],
    })


@_billing_staff_only
def billing_export(request, table: str):
    if table not in TABLES:
        raise Http404(f"There is no table {table!r}.")
    days = _days(request)
    if days is None:
        return HttpResponseBadRequest(f"days must be one of {', '.join(map(str, RANGES))}.",
                                      content_type="text/plain")
    window = Window.last(days)
    return csv_response(TABLES[table](window), window)
