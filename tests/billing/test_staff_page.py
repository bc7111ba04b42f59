"""The staff billing page and its CSV exports, checked figure by figure against seeded money."""
import csv
import io
import re
from datetime import timedelta
from html import unescape
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission
from django.db import models
from django.utils import timezone

from accounts.models import User
from billing.models import Hold, LedgerEntry, Payment, PaymentIssue, UsageRecord
from billing.services import hold_place, hold_settle, ledger_post
from core.money import Price
from tests.factories import make_org

pytestmark = pytest.mark.django_db

PAGE = "/staff/billing/"
SMALL = Price(input_micro_per_mtok=1_000_000, output_micro_per_mtok=2_000_000)  # 1 and 2 micro-USD a token
LARGE = Price(input_micro_per_mtok=10_000_000, output_micro_per_mtok=30_000_000)  # 10 and 30


def export(table):
    return f"/staff/billing/export/{table}.csv"


def backdate(model, pk, when):
    models.QuerySet(model).filter(pk=pk).update(created_at=when)  # plain: the ledger's own queryset refuses


K, F, P = LedgerEntry.Kind, UsageRecord.Status.FAILED, PaymentIssue.Kind
LEDGER = [("acme", K.TOPUP, 50, 2), ("globex", K.TOPUP, 30, 2), ("acme", K.TOPUP, 20, 10), ("acme", K.CLAWBACK, -5, 10),
          ("globex", K.CLAWBACK, -4, 20), ("acme", K.TOPUP, 7, 40), ("acme", K.TOPUP, 1, 100),
          ("acme", K.REFUND, 3, 0)]  # org, kind, USD, days ago; a staff refund is not revenue
USAGE = [  # org, model, price, prompt and completion tokens, days ago, status; cost in micro-USD
    ("acme", "m-small", SMALL, 1000, 500, 0, "completed"),  # 2_000
    ("acme", "m-small", SMALL, 400, 10, 0, F),  # a failed request's prompt is not billed: 20
    ("acme", "m-large", LARGE, 2000, 1000, 3, "completed"),  # 50_000
    ("acme", "m-small", SMALL, 100, 50, 3, "completed"),  # 200
    ("globex", "m-small", SMALL, 3000, 3000, 20, "completed"),  # 9_000
    ("globex", "m-large", LARGE, 1000, 0, 45, "completed"),  # 10_000
    ("acme", "m-large", LARGE, 1000, 1000, 95, "completed"),  # 40_000
]
ISSUES = [("globex", P.DISPUTE, 3000, "dp_1", "fraudulent", 5),
          (None, P.REFUND_SHORTFALL, 150, "re_1", "=1+1 credit already spent", 1),
          ("acme", P.PAYMENT_FAILED, 2000, "pi_old", "card declined", 50)]
PAYMENTS = [("acme", "auto_recharge", "failed", 2500, "pi_fail", "insufficient funds", 1),
            ("acme", "checkout", "succeeded", 5000, "pi_ok", "", 1),
            ("globex", "checkout", "failed", 1000, "pi_gone", "expired card", 60)]


@pytest.fixture
def seeded():
    """Two organizations with grants, top-ups and clawbacks, usage on several days and models, holds, issues."""
    now = timezone.now()
    ago = {d: now - timedelta(days=d) for d in (0, 1, 2, 3, 5, 10, 20, 40, 45, 50, 60, 95, 100)}
    orgs = {"acme": make_org("acme", credit_micro=100_000_000), "globex": make_org("globex", credit_micro=10_000_000),
            None: None}
    for org, kind, usd, days in LEDGER:
        entry = ledger_post(organization=orgs[org], kind=kind, amount_micro=usd * 1_000_000, reference=f"pi_{days}")
        backdate(LedgerEntry, entry.pk, ago[days])
    for n, (org, model, price, prompt, completion, days, status) in enumerate(USAGE):
        hold = hold_place(organization=orgs[org], api_key=None, request_id=f"r{n}", model_id=model,
                          prompt_tokens=prompt, max_tokens=completion, price=price)
        record = hold_settle(hold=hold, prompt_tokens=prompt, completion_tokens=completion, status=status)
        backdate(UsageRecord, record.pk, ago[days])
    hold_place(organization=orgs["acme"], api_key=None, request_id="h-acme", model_id="m-small", prompt_tokens=100,
               max_tokens=100, price=SMALL)  # 300
    old = hold_place(organization=orgs["globex"], api_key=None, request_id="h-globex", model_id="m-large",
                     prompt_tokens=10, max_tokens=10, price=LARGE)  # 400
    backdate(Hold, old.pk, now - timedelta(hours=3))
    for org, kind, cents, obj, detail, days in ISSUES:
        backdate(PaymentIssue, PaymentIssue.objects.create(organization=orgs[org], kind=kind, amount_cents=cents,
                                                           stripe_object_id=obj, detail=detail).pk, ago[days])
    for org, kind, status, cents, pi, failure, days in PAYMENTS:
        backdate(Payment, Payment.objects.create(organization=orgs[org], kind=kind, status=status, amount_cents=cents,
                                                 stripe_payment_intent_id=pi, failure_message=failure).pk, ago[days])
    return SimpleNamespace(day={d: timezone.localtime(t).strftime("%Y-%m-%d") for d, t in ago.items()},
                           when={d: timezone.localtime(t).strftime("%Y-%m-%d %H:%M") for d, t in ago.items()},
                           hold_placed=timezone.localtime(now - timedelta(hours=3)))


@pytest.fixture
def operator(client):
    user = User.objects.create_user("ops@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_ledgerentry"))
    client.force_login(user)
    return client


def _rows(html):
    return [[unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)]


def sections(html):
    """Each section of the page by id: its body rows and its totals line as the cells' text, and all its text."""
    found = {}
    for name, body in re.findall(r'<section id="(\w+)">(.*?)</section>', html, re.S):
        tbody, tfoot = (re.search(rf"<{part}>(.*?)</{part}>", body, re.S) for part in ("tbody", "tfoot"))
        found[name] = {"rows": _rows(tbody.group(1)) if tbody else [],
                       "totals": (_rows(tfoot.group(1)) or [None])[0] if tfoot else None,
                       "text": unescape(re.sub(r"<[^>]+>", "", body))}
    return found


def page_tables(client, days=None):
    response = client.get(PAGE, {"days": days} if days else {})
    assert response.status_code == 200
    return sections(response.content.decode())


def csv_rows(client, table, days):
    response = client.get(export(table), {"days": days})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(rf'attachment; filename="billing-{table}-{days}d-\d{{8}}\.csv"',
                        response["Content-Disposition"])
    return list(csv.reader(io.StringIO(response.content.decode())))


# --- who may see it -------------------------------------------------------------------------------

@pytest.mark.parametrize("customer", [False, True], ids=["anonymous", "not-staff"])
def test_anonymous_visitors_and_customers_are_sent_to_the_admin_login(client, customer):
    if customer:
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
    operator.force_login(User.objects.create_superuser("root@example.com", "pw"))
    assert operator.get(PAGE).status_code == 200


def test_an_unknown_range_falls_back_to_30_days_with_a_notice(operator, seeded):
    response = operator.get(PAGE, {"days": "365"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "There is no 365-day range; showing the last 30 days." in html
    assert sections(html)["revenue"]["totals"] == page_tables(operator, 30)["revenue"]["totals"]
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
