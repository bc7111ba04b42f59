"""The figures of the staff billing page, each a Table over a window of whole days ending now.

Revenue is what the ledger says customers paid (top-ups less Stripe clawbacks); grants, refunds and
adjustments move balances but are not revenue. Spend is the exact cost of usage records.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.models import CreditAccount, Hold, LedgerEntry, Payment, PaymentIssue, UsageRecord
from billing.staff.tables import Column, Table
from core.money import cents_to_micro

RANGES = (7, 30, 90)
DEFAULT_DAYS = 30
TOP_ORGANIZATIONS = 50
HOLDS_SHOWN = 100


@dataclass(frozen=True)
class Window:
    days: int
    since: datetime  # midnight (TIME_ZONE) at the start of the first day
    until: datetime

    @classmethod
    def last(cls, days: int, now: datetime | None = None) -> "Window":
        now = now or timezone.now()
        first = timezone.localtime(now) - timedelta(days=days - 1)
        return cls(days, first.replace(hour=0, minute=0, second=0, microsecond=0), now)

    def q(self, field: str) -> Q:
        return Q(**{f"{field}__gte": self.since, f"{field}__lte": self.until})


def balances(window: Window) -> Table:
    row = CreditAccount.objects.aggregate(
        accounts=Count("id"), balance=Sum("balance_micro", default=0), held=Sum("held_micro", default=0),
    )
    row["available"] = row["balance"] - row["held"]
    return Table("balances", "Balances now", [
        Column("accounts", "Accounts", "int"), Column("balance", "Total balance", "usd"),
        Column("held", "Held by requests in flight", "usd"), Column("available", "Available", "usd"),
    ], [row], note="All credit accounts, whatever the range.")


def revenue(window: Window) -> Table:
    kinds = [LedgerEntry.Kind.TOPUP, LedgerEntry.Kind.CLAWBACK]
    sums = (LedgerEntry.objects.filter(window.q("created_at"), kind__in=kinds)
            .annotate(day=TruncDate("created_at")).values("day", "kind")
            .annotate(total=Sum("amount_micro"), n=Count("id")).order_by())
    days: dict = {}
    for s in sums:
        day = days.setdefault(s["day"], {"day": s["day"], "topups": 0, "topup_count": 0, "clawbacks": 0})
        if s["kind"] == LedgerEntry.Kind.TOPUP:
            day["topups"], day["topup_count"] = s["total"], s["n"]
        else:
            day["clawbacks"] = -s["total"]
    rows = [dict(d, net=d["topups"] - d["clawbacks"]) for _, d in sorted(days.items(), reverse=True)]
    totals = {k: sum(r[k] for r in rows) for k in ("topups", "topup_count", "clawbacks", "net")}
    return Table("revenue", "Revenue by day", [
        Column("day", "Day"), Column("topups", "Top-ups", "usd"), Column("topup_count", "Count", "int"),
        Column("clawbacks", "Clawed back", "usd"), Column("net", "Net", "usd"),
    ], rows, note="Top-ups less clawbacks of refunded payments, from the ledger; days without any are left out.",
        totals=dict(totals, day="Total"))


def _usage_sums(window: Window, *group: str):
    return (UsageRecord.objects.filter(window.q("created_at")).values(*group)
            .annotate(requests=Count("id"), prompt_tokens=Sum("prompt_tokens"),
                      completion_tokens=Sum("completion_tokens"), cost=Sum("cost_micro")))


_USAGE_COLUMNS = [
    Column("requests", "Requests", "int"), Column("prompt_tokens", "Prompt tokens", "int"),
    Column("completion_tokens", "Completion tokens", "int"), Column("cost", "Cost", "usd"),
]


def _usage_totals(rows: list[dict], label_key: str) -> dict:
    return {label_key: "Total", **{c.key: sum(r[c.key] for r in rows) for c in _USAGE_COLUMNS}}


def top_organizations(window: Window) -> Table:
    rows = [
        {"organization": r["organization__name"], **{c.key: r[c.key] for c in _USAGE_COLUMNS}}
        for r in _usage_sums(window, "organization_id", "organization__name")
        .order_by("-cost", "organization__name")[:TOP_ORGANIZATIONS]
    ]
    return Table("organizations", "Top organizations by spend",
                 [Column("organization", "Organization"), *_USAGE_COLUMNS], rows,
                 note=f"The {TOP_ORGANIZATIONS} that spent most on usage in the range.")


def usage_by_model(window: Window) -> Table:
    rows = list(_usage_sums(window, "model_id").order_by("-cost", "model_id"))
    return Table("models", "Usage by model", [Column("model_id", "Model"), *_USAGE_COLUMNS], rows,
                 totals=_usage_totals(rows, "model_id"))


def holds_in_flight(window: Window) -> Table:
    active = Hold.objects.filter(status=Hold.Status.ACTIVE)
    summary = active.aggregate(n=Count("id"), total=Sum("amount_micro", default=0))
    rows = [{
        "created_at": h.created_at, "age": window.until - h.created_at, "organization": h.account.organization.name,
        "model_id": h.model_id, "request_id": h.request_id, "amount": h.amount_micro,
    } for h in active.select_related("account__organization").order_by("created_at", "id")[:HOLDS_SHOWN]]
    return Table("holds", "Holds in flight", [
        Column("created_at", "Placed", "datetime"), Column("age", "Age", "age"), Column("organization", "Organization"),
        Column("model_id", "Model"), Column("request_id", "Request"), Column("amount", "Held", "usd"),
    ], rows, note=f"Active holds now, oldest first: {summary['n']:,} in all"
                  + (f", the oldest {HOLDS_SHOWN} shown." if summary["n"] > HOLDS_SHOWN else "."),
        empty="No request holds credit now.", totals={"organization": "Total", "amount": summary["total"]})


def payment_issues(window: Window) -> Table:
    rows = [{
        "created_at": i.created_at, "organization": i.organization.name if i.organization else "",
        "kind": i.get_kind_display(), "amount": cents_to_micro(i.amount_cents),
        "stripe_object": i.stripe_object_id, "detail": i.detail,
    } for i in PaymentIssue.objects.filter(window.q("created_at")).select_related("organization")
        .order_by("-created_at", "-id")]
    return Table("issues", "Payment issues", [
        Column("created_at", "When", "datetime"), Column("organization", "Organization"), Column("kind", "Kind"),
        Column("amount", "Amount", "usd"), Column("stripe_object", "Stripe object"), Column("detail", "Detail"),
    ], rows, note="Failed payments, disputes and refunds that could not be clawed back in full.")


def failed_payments(window: Window) -> Table:
    rows = [{
        "created_at": p.created_at, "organization": p.organization.name, "kind": p.get_kind_display(),
        "amount": cents_to_micro(p.amount_cents), "payment_intent": p.stripe_payment_intent_id or "",
        "failure": p.failure_message,
    } for p in Payment.objects.filter(window.q("created_at"), status=Payment.Status.FAILED)
        .select_related("organization").order_by("-created_at", "-id")]
    return Table("failed_payments", "Failed payments", [
        Column("created_at", "When", "datetime"), Column("organization", "Organization"), Column("kind", "Kind"),
        Column("amount", "Amount", "usd"), Column("payment_intent", "Payment intent"),
        Column("failure", "Failure"),
    ], rows)


TABLES = {
    "balances": balances,
    "revenue": revenue,
    "organizations": top_organizations,
    "models": usage_by_model,
    "holds": holds_in_flight,
    "issues": payment_issues,
    "failed_payments": failed_payments,
}
