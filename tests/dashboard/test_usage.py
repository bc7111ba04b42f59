"""The usage page and its CSV: figures per range, charts, breakdowns and requests of the current organization only."""
import csv
import io
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Membership, User
from billing.models import UsageRecord
from billing.services import credit_grant
from tests.billing.test_tenant_api import noon, spend
from tests.factories import make_key, tenant

pytestmark = [pytest.mark.django_db, pytest.mark.money]

USAGE = "/usage/"
CSV = "/usage/requests.csv"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _matches(node, name: str, value: str) -> bool:
    """An attribute equal to `value`; for `class`, one of its classes."""
    if name == "class":
        return value in (node.attrs.get("class") or "").split()
    return node.attrs.get(name) == value


class Node:
    def __init__(self, tag: str, attrs: dict):
        self.tag, self.attrs, self.children = tag, attrs, []

    @property
    def text(self) -> str:
        parts = [child if isinstance(child, str) else child.text for child in self.children]
        return " ".join(" ".join(parts).split())

    def all(self, tag: str | None = None, **attrs) -> list["Node"]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and all(_matches(child, k.rstrip("_"), v)
                                                             for k, v in attrs.items()):
                    found.append(child)
                found.extend(child.all(tag, **attrs))
        return found

    def by_id(self, element_id: str) -> "Node":
        found = self.all(id=element_id)
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]

    def has(self, element_id: str) -> bool:
        return bool(self.all(id=element_id))

    def rows(self, table_id: str) -> list[list[str]]:
        """The text of each body cell of a table, row by row."""
        body = self.by_id(table_id).all("tbody")[0]
        return [[cell.text for cell in row.all("td")] for row in body.all("tr")]


class _Tree(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(response) -> Node:
    assert response.status_code == 200, response.content[:500]
    tree = _Tree()
    tree.feed(response.content.decode())
    return tree.root


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def acme():
    return tenant("acme")


@pytest.fixture
def globex():
    return tenant("globex")


@pytest.fixture
def seeded(acme, globex):
    """acme's requests today, two days ago (one by a key since deleted) and 40 days ago; globex's own.

    A token costs 1 micro-USD in and 2 out (tests.billing.test_tenant_api.PRICE).
    """
    credit_grant(organization=acme.org, amount_micro=100_000_000)
    credit_grant(organization=globex.org, amount_micro=100_000_000)
    batch, _ = make_key(acme.org, name="batch")
    gone, _ = make_key(acme.org, name="gone")
    first = spend(acme.org, acme.key, "small", 100, 10, noon(0))  # 120 micro
    spend(acme.org, acme.key, "large", 1_000, 100, noon(0))  # 1_200
    spend(acme.org, batch, "small", 200, 20, noon(2))  # 240
    spend(acme.org, gone, "large", 3_000, 300, noon(2))  # 3_600
    spend(acme.org, batch, "small", 50, 5, noon(40))  # 60, outside the default 30 days
    spend(globex.org, globex.key, "globex-model", 7_000, 700, noon(0))
    gone.delete()
    UsageRecord.objects.filter(pk=first.pk).update(latency_ms=1_234, status="failed")
    acme.batch = batch
    return acme


def test_a_member_sees_the_last_30_days_of_their_organization_only(seeded):
    page = parse(browser(seeded.users["member"]).get(USAGE))
    assert page.by_id("usage-total-requests").text == "4"
    assert page.by_id("usage-total-tokens").text == "4,730"
    assert page.by_id("usage-total-cost").text == "$0.00516"
    assert page.by_id("usage-range-30").attrs.get("aria-current") == "true"
    assert "globex-model" not in page.text and "4,730" in page.text


@pytest.mark.parametrize("query, requests, cost", [
    ("?range=7", "4", "$0.00516"),
    ("?range=90", "5", "$0.00522"),
    ("?start={d40}&end={d40}", "1", "$0.00006"),
    ("?start={d2}&end={d0}", "4", "$0.00516"),
    ("?start={d2}&end={d2}", "2", "$0.00384"),
])
def test_the_range_chooser_picks_the_days_counted(seeded, query, requests, cost):
    today = timezone.now().date()
    query = query.format(d0=today, d2=today - timedelta(days=2), d40=today - timedelta(days=40))
    page = parse(browser(seeded.users["member"]).get(USAGE + query))
    assert page.by_id("usage-total-requests").text == requests
    assert page.by_id("usage-total-cost").text == cost


@pytest.mark.parametrize("query, field, message", [
    ("?start=2026-02-30&end=2026-03-02", "start", "Enter a date as YYYY-MM-DD."),
    ("?start=yesterday&end=2026-03-02", "start", "Enter a date as YYYY-MM-DD."),
    ("?start=2026-03-02&end=2026-03-01", "end", "The last day must be on or after the first day."),
    ("?start=2024-01-01&end=2026-01-01", "start", "A range may span at most 366 days."),
    ("?start=2026-03-02", "end", "Choose the last day too."),
    ("?range=365", "range", "Choose 7, 30 or 90 days, or custom dates."),
])
def test_bad_dates_are_form_errors_and_the_default_range_is_shown(seeded, query, field, message):
    page = parse(browser(seeded.users["member"]).get(USAGE + query))
    assert message in page.by_id("usage-range").text
    assert "Showing the last 30 days instead" in page.by_id("usage-window").text
    assert page.by_id("usage-total-requests").text == "4"
    csv_answer = browser(seeded.users["member"]).get(CSV + query)
    assert csv_answer.status_code == 400 and message in csv_answer.content.decode()


def test_charts_have_a_bar_per_day_with_tooltips_and_labelled_axes(seeded):
    today = timezone.now().date()
    page = parse(browser(seeded.users["member"]).get(USAGE))
    tokens, spend_chart = page.by_id("chart-tokens"), page.by_id("chart-spend")
    bars = tokens.all("g", class_="bar")
    assert len(bars) == 30 and len(spend_chart.all("g", class_="bar")) == 30
    titles = [bar.all("title")[0].text for bar in bars]
    assert titles[-1] == f"{today:%b %d, %Y}: 1,210 tokens (1,100 prompt, 110 completion), 2 requests"
    assert titles[-2] == f"{today - timedelta(days=1):%b %d, %Y}: 0 tokens (0 prompt, 0 completion), 0 requests"
    assert spend_chart.all("g", class_="bar")[-3].all("title")[0].text == (
        f"{today - timedelta(days=2):%b %d, %Y}: $0.00384, 2 requests")
    # Two days ago is the highest: 3,520 tokens and $0.00384 make axes of round steps up to 4,000 and $0.004.
    assert [t.text for t in tokens.all("text", class_="y-tick")] == ["0", "1k", "2k", "3k", "4k"]
    assert [t.text for t in spend_chart.all("text", class_="y-tick")] == [
        "$0.00", "$0.001", "$0.002", "$0.003", "$0.004"]
    days = [t.text for t in tokens.all("text", class_="x-label")]
    assert days[0] == f"{today - timedelta(days=29):%b %d}" and 3 <= len(days) <= 6
    assert "day (UTC)" in tokens.text and "tokens per day" in tokens.text and "USD per day" in spend_chart.text
    today_bar = bars[-1].all("rect")
    assert len(today_bar) == 3  # the hover area, then prompt and completion stacked


def parse_widths(html: str) -> list[str]:
    return [f"{width}%" for width in re.findall(r'class="share-bar" width="(\d+)"', html)]


def test_breakdowns_by_model_and_by_key(seeded):
    page = parse(browser(seeded.users["member"]).get(USAGE))
    assert page.rows("usage-by-model") == [
        ["large", "2", "4,000", "400", "$0.0048", "93.0%"],
        ["small", "2", "300", "30", "$0.00036", "7.0%"],
    ]
    assert page.rows("usage-by-key") == [
        [f"test ({seeded.key.prefix}…)", "2", "1,100", "110", "$0.00132", "25.6%"],
        [f"batch ({seeded.batch.prefix}…)", "1", "200", "20", "$0.00024", "4.7%"],
        ["(deleted key)", "1", "3,000", "300", "$0.0036", "69.8%"],
    ]
    bars = parse_widths(browser(seeded.users["member"]).get(USAGE).content.decode())
    assert bars == ["100%", "8%", "37%", "7%", "100%"]  # against the largest row of each table


def test_the_requests_table_shows_each_request_newest_first(seeded):
    page = parse(browser(seeded.users["member"]).get(USAGE))
    rows = page.rows("usage-requests")
    assert [row[1:] for row in rows] == [
        [f"test {seeded.key.prefix}…", "large", "1,000", "100", "$0.0012", "0", "Completed"],
        [f"test {seeded.key.prefix}…", "small", "100", "10", "$0.00012", "1,234", "Failed"],
        ["(deleted key)", "large", "3,000", "300", "$0.0036", "0", "Completed"],  # same time: the later first
        [f"batch {seeded.batch.prefix}…", "small", "200", "20", "$0.00024", "0", "Completed"],
    ]
    assert rows[0][0] == f"{noon(0):%Y-%m-%d} 12:00:00"
    assert not page.has("usage-requests-pager")


def test_the_requests_table_is_paginated_and_keeps_the_range(acme):
    credit_grant(organization=acme.org, amount_micro=100_000_000)
    for i in range(55):
        spend(acme.org, acme.key, "small", 10 + i, 1, noon(0) - timedelta(minutes=i))
    client = browser(acme.users["member"])
    first = parse(client.get(USAGE + "?range=7"))
    assert len(first.rows("usage-requests")) == 50
    assert first.rows("usage-requests")[0][3] == "10"  # the newest
    assert "Page 1 of 2" in first.all("nav", **{"data-testid": "usage-requests-pager"})[0].text
    older = first.all("a", **{"data-testid": "usage-requests-pager-next"})[0].attrs["href"]
    assert older.startswith("/usage/?") and "range=7" in older and "page=2" in older
    second = parse(client.get(older.split("#")[0]))
    assert [row[3] for row in second.rows("usage-requests")] == ["60", "61", "62", "63", "64"]
    assert parse(client.get(USAGE + "?range=7&page=999")).rows("usage-requests")[0][3] == "60"  # the last page


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200, response.content
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_the_csv_has_a_header_and_one_row_per_request_of_the_range(seeded):
    today = timezone.now().date()
    response = browser(seeded.users["member"]).get(CSV + "?range=30")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    start = today - timedelta(days=29)
    assert response["Content-Disposition"] == f'attachment; filename="usage-{start:%Y%m%d}-{today:%Y%m%d}.csv"'
    rows = _csv(response)
    assert rows[0] == ["time_utc", "request_id", "key_name", "key_prefix", "model", "prompt_tokens",
                       "cached_tokens", "completion_tokens", "cost_usd", "latency_ms", "status", "finish_reason"]
    assert len(rows) == 5 and not any("globex-model" in row for row in rows)
    failed = next(row for row in rows if row[10] == "failed")
    assert failed[0] == f"{today}T12:00:00Z" and failed[2:10] == [
        "test", seeded.key.prefix, "small", "100", "0", "10", "0.000120", "1234"]
    assert [row[2] for row in rows[1:]].count("(deleted key)") == 1
    day40 = today - timedelta(days=40)
    older = _csv(browser(seeded.users["member"]).get(f"{CSV}?start={day40}&end={day40}"))
    assert len(older) == 2 and older[1][8] == "0.000060"
    page = parse(browser(seeded.users["member"]).get(USAGE + "?range=90"))
    assert page.by_id("usage-csv").attrs["href"] == CSV + "?range=90"


def test_the_csv_gives_each_request_its_cached_prompt_tokens(acme):
    credit_grant(organization=acme.org, amount_micro=1_000_000)
    record = spend(acme.org, acme.key, "small", 100, 10, noon(0), cached=40)  # 60 + 20 + 20 micro-USD
    rows = _csv(browser(acme.users["member"]).get(CSV))
    line = dict(zip(rows[0], next(row for row in rows[1:] if row[1] == record.request_id)))
    assert (line["prompt_tokens"], line["cached_tokens"], line["completion_tokens"]) == ("100", "40", "10")
    assert line["cost_usd"] == "0.000100"


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(acme):
    credit_grant(organization=acme.org, amount_micro=100_000_000)
    for name, model in [('=HYPERLINK("http://evil.test","x")', "+cmd"), ("@SUM(A1)", "-2+3"), ("plain", "m=1")]:
        key, _ = make_key(acme.org, name=name)
        spend(acme.org, key, model, 10, 1, noon(0))
    rows = _csv(browser(acme.users["member"]).get(CSV))[1:]
    cells = {(row[2], row[4]) for row in rows}
    assert cells == {("'=HYPERLINK(\"http://evil.test\",\"x\")", "'+cmd"), ("'@SUM(A1)", "'-2+3"), ("plain", "m=1")}


def test_signed_out_users_go_to_login_and_users_without_an_organization_create_one(acme):
    for path in (USAGE, CSV):
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    loner = User.objects.create_user(email="loner@example.test")
    response = browser(loner).get(USAGE)
    assert response.status_code == 302 and response["Location"] == "/organizations/new/"


def test_a_user_of_two_organizations_sees_the_current_ones_usage(seeded, globex):
    both = seeded.users["owner"]
    Membership.objects.create(user=both, organization=globex.org, role="member")
    client = browser(both)
    client.post("/organizations/switch/", {"organization": str(seeded.org.pk)})
    assert parse(client.get(USAGE)).by_id("usage-total-requests").text == "4"
    client.post("/organizations/switch/", {"organization": str(globex.org.pk)})
    page = parse(client.get(USAGE))
    assert page.by_id("usage-total-requests").text == "1"
    assert page.rows("usage-by-model") == [["globex-model", "1", "7,000", "700", "$0.0084", "100.0%"]]
    assert len(_csv(client.get(CSV))) == 2
    assert re.search(r"\bsmall\b", page.by_id("usage-requests").text) is None
