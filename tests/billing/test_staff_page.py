"""The staff billing page and its CSV exports, checked figure by figure against seeded money."""
import csv
import io
import re
from datetime import timedelta
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission
from django.db import models
from django.utils import timezone

from accounts.models import User
from billing.models import Hold, LedgerEntry, Payment, PaymentIssue, UsageRecord
from billing.pricing import Price
from billing.services import hold_place, hold_settle, ledger_post
from tests.factories import make_org

pytestmark = pytest.mark.django_db

PAGE = "/staff/billing/"
SMALL = Price(input_micro_per_mtok=1_000_000, output_micro_per_mtok=2_000_000)  # 1 and 2 micro-USD a token
LARGE = Price(input_micro_per_mtok=10_000_000, output_micro_per_mtok=30_000_000)  # 10 and 30


def export(table):
    return f"/staff/billing/export/{table}.csv"


def backdate(model, pk, when, field="created_at"):
    # A plain queryset: the ledger's own refuses updates, and history has to start somewhere in a test.
    models.QuerySet(model).filter(pk=pk).update(**{field: when})


@pytest.fixture
def seeded():
    """Two organizations with grants, top-ups and a clawback, usage on several days and models, holds, issues."""
    now = timezone.now()
    ago = {d: now - timedelta(days=d) for d in (1, 2, 3, 5, 10, 20, 40, 45, 50, 60, 95, 100)}
    acme, globex = make_org("acme", credit_micro=100_000_000), make_org("globex", credit_micro=10_000_000)

    def money(org, kind, usd, days):
        entry = ledger_post(organization=org, kind=kind, amount_micro=usd * 1_000_000, reference=f"pi_{days}")
        backdate(LedgerEntry, entry.pk, ago[days])

    money(acme, LedgerEntry.Kind.TOPUP, 50, 2)
    money(globex, LedgerEntry.Kind.TOPUP, 30, 2)
    money(acme, LedgerEntry.Kind.TOPUP, 20, 10)
    money(acme, LedgerEntry.Kind.CLAWBACK, -5, 10)
    money(globex, LedgerEntry.Kind.CLAWBACK, -4, 20)
    money(acme, LedgerEntry.Kind.TOPUP, 7, 40)
    money(acme, LedgerEntry.Kind.TOPUP, 1, 100)
    ledger_post(organization=acme, kind=LedgerEntry.Kind.REFUND, amount_micro=3_000_000)  # not revenue

    def usage(org, model, price, prompt, completion, days=None, status=UsageRecord.Status.COMPLETED):
        rid = f"r{UsageRecord.objects.count()}"
        hold = hold_place(organization=org, api_key=None, request_id=rid, model_id=model, prompt_tokens=prompt,
                          max_tokens=completion, price=price)
        record = hold_settle(hold=hold, prompt_tokens=prompt, completion_tokens=completion, status=status)
        if days:
            backdate(UsageRecord, record.pk, ago[days])

    usage(acme, "m-small", SMALL, 1000, 500)  # 2_000 micro-USD
    usage(acme, "m-small", SMALL, 400, 10, status=UsageRecord.Status.FAILED)  # prompt not billed: 20
    usage(acme, "m-large", LARGE, 2000, 1000, days=3)  # 50_000
    usage(acme, "m-small", SMALL, 100, 50, days=3)  # 200
    usage(globex, "m-small", SMALL, 3000, 3000, days=20)  # 9_000
    usage(globex, "m-large", LARGE, 1000, 0, days=45)  # 10_000
    usage(acme, "m-large", LARGE, 1000, 1000, days=95)  # 40_000

    hold_place(organization=acme, api_key=None, request_id="h-acme", model_id="m-small", prompt_tokens=100,
               max_tokens=100, price=SMALL)  # 300
    old = hold_place(organization=globex, api_key=None, request_id="h-globex", model_id="m-large", prompt_tokens=10,
                     max_tokens=10, price=LARGE)  # 400
    backdate(Hold, old.pk, now - timedelta(hours=3))

    def issue(org, kind, cents, obj, detail, days):
        backdate(PaymentIssue, PaymentIssue.objects.create(organization=org, kind=kind, amount_cents=cents,
                                                           stripe_object_id=obj, detail=detail).pk, ago[days])

    issue(globex, PaymentIssue.Kind.DISPUTE, 3000, "dp_1", "fraudulent", 5)
    issue(None, PaymentIssue.Kind.REFUND_SHORTFALL, 150, "re_1", "=1+1 credit already spent", 1)
    issue(acme, PaymentIssue.Kind.PAYMENT_FAILED, 2000, "pi_old", "card declined", 50)

    def payment(org, kind, status, cents, pi, failure, days):
        backdate(Payment, Payment.objects.create(organization=org, kind=kind, status=status, amount_cents=cents,
                                                 stripe_payment_intent_id=pi, failure_message=failure).pk, ago[days])

    payment(acme, Payment.Kind.AUTO_RECHARGE, Payment.Status.FAILED, 2500, "pi_fail", "insufficient funds", 1)
    payment(acme, Payment.Kind.CHECKOUT, Payment.Status.SUCCEEDED, 5000, "pi_ok", "", 1)
    payment(globex, Payment.Kind.CHECKOUT, Payment.Status.FAILED, 1000, "pi_gone", "expired card", 60)
    day = {d: timezone.localtime(t).strftime("%Y-%m-%d") for d, t in ago.items()}
    when = {d: timezone.localtime(t).strftime("%Y-%m-%d %H:%M") for d, t in ago.items()}
    return SimpleNamespace(now=now, day=day, when=when, hold_placed=timezone.localtime(now - timedelta(hours=3)))


@pytest.fixture
def operator(client):
    user = User.objects.create_user("ops@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_ledgerentry"))
    client.force_login(user)
    return client


class Tables(HTMLParser):
    """Each section of the page by id: its body rows and its totals line, as the cells' text."""

    def __init__(self, html):
        super().__init__()
        self.sections, self.section, self.part, self.row, self.cell = {}, None, None, None, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.section = self.sections.setdefault(dict(attrs)["id"], {"rows": [], "totals": None, "text": ""})
        elif tag in ("tbody", "tfoot"):
            self.part = tag
        elif tag == "tr" and self.part:
            self.row = []
        elif tag == "td" and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.row.append(self.cell.strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if self.part == "tbody":
                self.section["rows"].append(self.row)
            else:
                self.section["totals"] = self.row
            self.row = None
        elif tag in ("tbody", "tfoot"):
            self.part = None
        elif tag == "section":
            self.section = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self.section is not None:
            self.section["text"] += data


def page_tables(client, days=None):
    response = client.get(PAGE, {"days": days} if days else {})
    assert response.status_code == 200
    return Tables(response.content.decode()).sections


def csv_rows(client, table, days):
    response = client.get(export(table), {"days": days})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(rf'attachment; filename="billing-{table}-{days}d-\d{{8}}\.csv"',
                        response["Content-Disposition"])
    return list(csv.reader(io.StringIO(response.content.decode())))


# --- who may see it -------------------------------------------------------------------------------

def test_anonymous_visitors_are_sent_to_the_admin_login(client):
    for url in (PAGE, export("revenue")):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/admin/login/?next=")


def test_users_who_are_not_staff_are_sent_to_the_admin_login(client):
    client.force_login(User.objects.create_user("customer@example.com", "pw"))
    for url in (PAGE, export("revenue")):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/admin/login/?next=")


def test_staff_who_may_not_read_the_ledger_get_403_and_no_admin_link(client):
    client.force_login(User.objects.create_user("support@example.com", "pw", is_staff=True))
    assert client.get(PAGE).status_code == 403
    assert client.get(export("revenue")).status_code == 403
    assert PAGE not in client.get("/admin/").content.decode()


def test_staff_who_may_read_the_ledger_see_the_page_linked_from_the_admin_index(operator):
    index = operator.get("/admin/").content.decode()
    assert f'href="{PAGE}"' in index
    response = operator.get(PAGE)
    assert response.status_code == 200 and "<h1>Billing</h1>" in response.content.decode()
    assert operator.post(PAGE).status_code == 405


def test_superusers_see_the_page(client):
    client.force_login(User.objects.create_superuser("root@example.com", "pw"))
    assert client.get(PAGE).status_code == 200


def test_an_unknown_range_falls_back_to_30_days_with_a_notice(operator, seeded):
    response = operator.get(PAGE, {"days": "365"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "There is no 365-day range; showing the last 30 days." in html
    assert Tables(html).sections["revenue"]["totals"] == page_tables(operator, 30)["revenue"]["totals"]
    assert 'aria-current="page">30 days' in html


def test_an_unknown_range_or_table_in_an_export_is_refused(operator):
    bad = operator.get(export("revenue"), {"days": "abc"})
    assert bad.status_code == 400 and b"days must be one of 7, 30, 90" in bad.content
    assert operator.get(export("passwords")).status_code == 404
    assert operator.get("/staff/billing/export/revenue.json").status_code == 404


# --- every figure ---------------------------------------------------------------------------------

@pytest.mark.money
def test_balances_held_and_available(operator, seeded):
    # acme: 100 + 50 + 20 - 5 + 7 + 1 + 3 (refund) USD, less 92_220 micro-USD of usage
    # globex: 10 + 30 - 4 USD, less 19_000; held: 300 + 400
    balances = page_tables(operator)["balances"]
    assert balances["rows"] == [["2", "$211.88878", "$0.0007", "$211.88808"]]
    assert csv_rows(operator, "balances", 30) == [
        ["accounts", "balance_usd", "held_usd", "available_usd"], ["2", "211.888780", "0.000700", "211.888080"]]


@pytest.mark.money
@pytest.mark.parametrize("days, rows, totals", [
    (7, [(2, "$80.00", "2", "$0.00", "$80.00")], ["$80.00", "2", "$0.00", "$80.00"]),
    (30, [(2, "$80.00", "2", "$0.00", "$80.00"), (10, "$20.00", "1", "$5.00", "$15.00"),
          (20, "$0.00", "0", "$4.00", "-$4.00")], ["$100.00", "3", "$9.00", "$91.00"]),
    (90, [(2, "$80.00", "2", "$0.00", "$80.00"), (10, "$20.00", "1", "$5.00", "$15.00"),
          (20, "$0.00", "0", "$4.00", "-$4.00"), (40, "$7.00", "1", "$0.00", "$7.00")],
     ["$107.00", "4", "$9.00", "$98.00"]),
])
def test_revenue_by_day_is_top_ups_less_clawbacks(operator, seeded, days, rows, totals):
    revenue = page_tables(operator, days)["revenue"]
    assert revenue["rows"] == [[seeded.day[d], *cells] for d, *cells in rows]
    assert revenue["totals"] == ["Total", *totals]


@pytest.mark.money
def test_revenue_csv_matches_the_page(operator, seeded):
    assert csv_rows(operator, "revenue", 30) == [
        ["day", "topups_usd", "topup_count", "clawbacks_usd", "net_usd"],
        [seeded.day[2], "80.000000", "2", "0.000000", "80.000000"],
        [seeded.day[10], "20.000000", "1", "5.000000", "15.000000"],
        [seeded.day[20], "0.000000", "0", "4.000000", "-4.000000"],
    ]


@pytest.mark.money
@pytest.mark.parametrize("days, expected", [
    (7, [["acme", "4", "3,500", "1,560", "$0.05222"]]),
    (30, [["acme", "4", "3,500", "1,560", "$0.05222"], ["globex", "1", "3,000", "3,000", "$0.009"]]),
    (90, [["acme", "4", "3,500", "1,560", "$0.05222"], ["globex", "2", "4,000", "3,000", "$0.019"]]),
])
def test_top_organizations_by_spend(operator, seeded, days, expected):
    assert page_tables(operator, days)["organizations"]["rows"] == expected


@pytest.mark.money
@pytest.mark.parametrize("days, expected, totals", [
    (7, [["m-large", "1", "2,000", "1,000", "$0.05"], ["m-small", "3", "1,500", "560", "$0.00222"]],
     ["4", "3,500", "1,560", "$0.05222"]),
    (30, [["m-large", "1", "2,000", "1,000", "$0.05"], ["m-small", "4", "4,500", "3,560", "$0.01122"]],
     ["5", "6,500", "4,560", "$0.06122"]),
    (90, [["m-large", "2", "3,000", "1,000", "$0.06"], ["m-small", "4", "4,500", "3,560", "$0.01122"]],
     ["6", "7,500", "4,560", "$0.07122"]),
])
def test_usage_by_model(operator, seeded, days, expected, totals):
    models_table = page_tables(operator, days)["models"]
    assert models_table["rows"] == expected
    assert models_table["totals"] == ["Total", *totals]


@pytest.mark.money
def test_usage_csvs_match_the_page(operator, seeded):
    assert csv_rows(operator, "models", 90) == [
        ["model_id", "requests", "prompt_tokens", "completion_tokens", "cost_usd"],
        ["m-large", "2", "3000", "1000", "0.060000"],
        ["m-small", "4", "4500", "3560", "0.011220"],
    ]
    assert csv_rows(operator, "organizations", 30) == [
        ["organization", "requests", "prompt_tokens", "completion_tokens", "cost_usd"],
        ["acme", "4", "3500", "1560", "0.052220"],
        ["globex", "1", "3000", "3000", "0.009000"],
    ]


@pytest.mark.money
def test_holds_in_flight_oldest_first_with_their_age(operator, seeded):
    holds = page_tables(operator, 7)["holds"]
    placed = seeded.hold_placed.strftime("%Y-%m-%d %H:%M")
    assert holds["rows"][0] == [placed, "3h 0m", "globex", "m-large", "h-globex", "$0.0004"]
    assert holds["rows"][1][2:] == ["acme", "m-small", "h-acme", "$0.0003"]
    assert re.fullmatch(r"\d+s", holds["rows"][1][1])
    assert len(holds["rows"]) == 2
    assert holds["totals"] == ["", "", "Total", "", "", "$0.0007"]
    assert "2 in all." in holds["text"]
    rows = csv_rows(operator, "holds", 7)
    assert rows[0] == ["created_at", "age_seconds", "organization", "model_id", "request_id", "amount_usd"]
    assert rows[1][2:] == ["globex", "m-large", "h-globex", "0.000400"] and 10800 <= int(rows[1][1]) < 10900
    assert rows[1][0] == seeded.hold_placed.isoformat()
    assert [r[4] for r in rows[1:]] == ["h-globex", "h-acme"]


@pytest.mark.money
def test_payment_issues_and_failed_payments_in_the_range(operator, seeded):
    tables = page_tables(operator, 30)
    assert tables["issues"]["rows"] == [
        [seeded.when[1], "", "Refund Shortfall", "$1.50", "re_1", "=1+1 credit already spent"],
        [seeded.when[5], "globex", "Dispute", "$30.00", "dp_1", "fraudulent"],
    ]
    assert tables["failed_payments"]["rows"] == [
        [seeded.when[1], "acme", "Auto Recharge", "$25.00", "pi_fail", "insufficient funds"],
    ]
    wide = page_tables(operator, 90)
    assert [r[4] for r in wide["issues"]["rows"]] == ["re_1", "dp_1", "pi_old"]
    assert [r[4] for r in wide["failed_payments"]["rows"]] == ["pi_fail", "pi_gone"]
    assert page_tables(operator, 7)["issues"]["rows"][1][2:4] == ["Dispute", "$30.00"]


@pytest.mark.money
def test_issue_csv_matches_the_page_and_cannot_smuggle_a_formula(operator, seeded):
    rows = csv_rows(operator, "issues", 7)
    assert rows[0] == ["created_at", "organization", "kind", "amount_usd", "stripe_object", "detail"]
    assert [r[1:] for r in rows[1:]] == [
        ["", "Refund Shortfall", "1.500000", "re_1", "'=1+1 credit already spent"],
        ["globex", "Dispute", "30.000000", "dp_1", "fraudulent"],
    ]
    assert csv_rows(operator, "failed_payments", 90)[1:][1][1:] == [
        "globex", "Checkout", "10.000000", "pi_gone", "expired card"]


def test_an_empty_platform_shows_empty_tables_not_errors(operator):
    tables = page_tables(operator, 90)
    assert tables["balances"]["rows"] == [["0", "$0.00", "$0.00", "$0.00"]]
    assert "Nothing in this range." in tables["revenue"]["text"]
    assert "No request holds credit now." in tables["holds"]["text"]
    assert csv_rows(operator, "issues", 90) == [
        ["created_at", "organization", "kind", "amount_usd", "stripe_object", "detail"]]
