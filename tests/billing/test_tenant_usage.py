"""/api/billing/usage figures against seeded requests, top-ups through the fake Stripe, and CSRF on changes."""
from datetime import datetime, time, timedelta, timezone as tz

import pytest
from django.test import Client
from django.utils import timezone

from billing.models import BillingProfile, Payment
from tests.billing.fake_stripe import deliver
from tests.billing.test_tenant_api import assert_error, call, noon, spend
from tests.factories import make_key

pytestmark = [pytest.mark.django_db, pytest.mark.money]

ZERO = {"requests": 0, "prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0, "cost_micro": 0,
        "cost_usd": "0.00"}


def figures(requests, prompt, completion, cached=0, cost=None):
    cost = prompt + 2 * completion if cost is None else cost
    whole, fraction = divmod(cost, 1_000_000)
    return {"requests": requests, "prompt_tokens": prompt, "cached_tokens": cached, "completion_tokens": completion,
            "cost_micro": cost, "cost_usd": f"{whole}.{f'{fraction:06d}'.rstrip('0').ljust(2, '0')}"}


@pytest.fixture
def seeded(acme, globex):
    """acme's requests over three days, two models and two keys (and one key since deleted); globex's own."""
    from billing.services import credit_grant

    credit_grant(organization=acme.org, amount_micro=100_000_000)
    credit_grant(organization=globex.org, amount_micro=100_000_000)
    batch, _ = make_key(acme.org, name="batch")
    gone, _ = make_key(acme.org, name="gone")
    spend(acme.org, acme.key, "small", 100, 10, noon(0))
    spend(acme.org, acme.key, "large", 1_000, 100, noon(0))
    spend(acme.org, batch, "small", 200, 20, noon(2))
    spend(acme.org, gone, "large", 3_000, 300, noon(2))
    spend(acme.org, batch, "small", 50, 5, noon(40))  # outside the default 30 days
    spend(globex.org, globex.key, "small", 7_000, 700, noon(0))
    gone.delete()
    return batch


def usage(acme, query="", role="member"):
    response = call((acme, role), "get", f"/api/billing/usage{query}")
    assert response.status_code == 200, response.content
    return response.json()


def test_usage_by_day_covers_the_last_30_days_without_gaps(acme, seeded):
    today = timezone.now().date()
    body = usage(acme)
    assert (body["start"], body["end"], body["group_by"]) == (str(today - timedelta(days=29)), str(today), "day")
    assert [row["day"] for row in body["data"]] == [str(today - timedelta(days=29 - i)) for i in range(30)]
    by_day = {row.pop("day"): row for row in body["data"]}
    assert by_day[str(today)] == figures(2, 1_100, 110)
    assert by_day[str(today - timedelta(days=2))] == figures(2, 3_200, 320)
    assert by_day[str(today - timedelta(days=1))] == ZERO
    assert body["total"] == figures(4, 4_300, 430)


def test_usage_by_model_key_and_day_model_add_up_to_the_ledger(acme, seeded):
    start = str(timezone.now().date() - timedelta(days=60))
    by_model = usage(acme, f"?start={start}&group_by=model", role="key")
    assert by_model["data"] == [{"model": "large", **figures(2, 4_000, 400)}, {"model": "small", **figures(3, 350, 35)}]
    by_key = usage(acme, f"?start={start}&group_by=key", role="owner")["data"]
    assert by_key == [
        {"key": {"id": acme.key.pk, "name": "test", "prefix": acme.key.prefix}, **figures(2, 1_100, 110)},
        {"key": {"id": seeded.pk, "name": "batch", "prefix": seeded.prefix}, **figures(2, 250, 25)},
        {"key": None, **figures(1, 3_000, 300)},
    ]
    day_model = usage(acme, f"?start={start}&group_by=day_model")["data"]
    assert [(row["day"], row["model"], row["requests"]) for row in day_model] == [
        (str(noon(40).date()), "small", 1), (str(noon(2).date()), "large", 1), (str(noon(2).date()), "small", 1),
        (str(noon(0).date()), "large", 1), (str(noon(0).date()), "small", 1)]
    charged = -sum(e["amount_micro"] for e in call((acme, "owner"), "get", "/api/billing/ledger?kind=usage&limit=100")
                   .json()["data"])
    assert usage(acme, f"?start={start}")["total"]["cost_micro"] == charged == 4_000 + 2 * 400 + 350 + 2 * 35


def test_a_range_counts_whole_utc_days_at_both_ends(acme, seeded):
    day = noon(2).date()
    body = usage(acme, f"?start={day}&end={day}")
    assert body["data"] == [{"day": str(day), **figures(2, 3_200, 320)}] and body["total"] == figures(2, 3_200, 320)
    edge = datetime.combine(day, time(23, 59, 59), tzinfo=tz.utc)
    spend(acme.org, acme.key, "small", 1, 0, edge)
    spend(acme.org, acme.key, "small", 1, 0, edge + timedelta(seconds=1))
    assert usage(acme, f"?start={day}&end={day}")["total"]["requests"] == 3
    future = timezone.now().date() + timedelta(days=3)
    assert usage(acme, f"?start={future}")["total"] == ZERO


def test_usage_counts_the_prompt_tokens_served_from_the_cache_and_their_cheaper_charge(acme):
    from billing.services import credit_grant

    credit_grant(organization=acme.org, amount_micro=1_000_000)
    # At 1 micro-USD an uncached prompt token, 0.5 a cached one, 2 a completion token; each request rounds up once.
    spend(acme.org, acme.key, "small", 100, 10, noon(0), cached=61)  # 39 + 30.5 + 20 -> 90
    spend(acme.org, acme.key, "small", 10, 1, noon(0), cached=10)  # 0 + 5 + 2 -> 7
    spend(acme.org, acme.key, "large", 20, 0, noon(0))  # 20
    body = usage(acme, "?group_by=model")
    assert body["data"] == [{"model": "large", **figures(1, 20, 0)},
                            {"model": "small", **figures(2, 110, 11, cached=71, cost=97)}]
    assert body["total"] == figures(3, 130, 11, cached=71, cost=117)


@pytest.mark.parametrize("query, param", [
    ("?start=2025-13-01", "start"), ("?start=yesterday", "start"), ("?end=2025-02-30", "end"),
    ("?start=2025-01-01T00:00", "start"), ("?start=2025-03-02&end=2025-03-01", "end"),
    ("?start=2023-01-01&end=2025-01-01", "start"), ("?group_by=week", "group_by"), ("?group_by=", "group_by"),
    ("?end=", "end"),
])
def test_bad_dates_ranges_and_groupings_are_400s_naming_the_parameter(acme, query, param):
    assert_error(call((acme, "owner"), "get", f"/api/billing/usage{query}"), 400, param=param)


def test_a_checkout_topup_credits_the_balance_and_saves_the_card(acme, globex, fake_stripe):
    created = call((acme, "admin"), "post", "/api/billing/topups", {"amount_usd": "25.00"})
    assert created.status_code == 201, created.content
    body = created.json()
    payment = Payment.objects.get()
    assert body == {"id": payment.pk, "url": body["url"], "amount_usd": "25.00", "status": "pending"}
    session = fake_stripe.of("checkout.session")[0]
    assert body["url"] == session["url"] and payment.created_by == acme.users["admin"]
    assert session["success_url"] == "http://testserver/billing/?topup=success"
    assert session["cancel_url"] == "http://testserver/billing/?topup=cancelled"
    assert call((acme, "owner"), "get", "/api/billing/balance").json()["balance_micro"] == 0

    assert deliver(fake_stripe.complete_checkout(session["id"])).status_code == 200
    assert call((acme, "member"), "get", "/api/billing/balance").json()["balance_usd"] == "25.00"
    [entry] = call((acme, "key"), "get", "/api/billing/ledger?kind=topup").json()["data"]
    assert entry["amount_micro"] == 25_000_000
    [listed] = call((acme, "member"), "get", "/api/billing/topups").json()["data"]
    assert listed == {**listed, "id": payment.pk, "kind": "checkout", "status": "succeeded", "amount_usd": "25.00",
                      "credited_usd": "25.00", "refunded_usd": "0.00", "created_by": "admin@acme.test"}
    assert call((globex, "owner"), "get", "/api/billing/topups").json()["total"] == 0
    assert call((acme, "owner"), "get", "/api/billing/settings").json()["auto_recharge"]["card_saved"] is True


def test_topup_urls_given_by_the_client_are_used(acme, fake_stripe):
    urls = {"success_url": "https://app.example.com/paid", "cancel_url": "https://app.example.com/back"}
    assert call((acme, "owner"), "post", "/api/billing/topups", {"amount_usd": 10, **urls}).status_code == 201
    session = fake_stripe.of("checkout.session")[0]
    assert (session["success_url"], session["cancel_url"]) == (urls["success_url"], urls["cancel_url"])


@pytest.mark.parametrize("body, param", [
    *[({"amount_usd": amount}, "amount_usd") for amount in ("4.99", "10000.01", "25.001", "-25", "ten", True, "NaN",
                                                             "1e400", None, ["25"], "")],
    ({}, "amount_usd"),
    ({"amount_usd": "25", "success_url": "javascript:alert(1)"}, "success_url"),
    ({"amount_usd": "25", "cancel_url": "not a url"}, "cancel_url"), ({"amount_usd": "25", "coupon": "x"}, "coupon"),
])
def test_bad_topups_are_400s_naming_the_parameter_and_create_nothing(acme, fake_stripe, body, param):
    assert_error(call((acme, "owner"), "post", "/api/billing/topups", body), 400, param=param)
    assert not Payment.objects.exists() and not fake_stripe.of("checkout.session")


def test_topups_without_stripe_are_503_and_stripe_failures_502(acme, settings, fake_stripe):
    settings.STRIPE_SECRET_KEY = None
    error = assert_error(call((acme, "owner"), "post", "/api/billing/topups", {"amount_usd": "25"}), 503,
                         code="payments_unavailable")
    assert error["type"] == "server_error"
    settings.STRIPE_SECRET_KEY = "sk_test_wrong"
    assert_error(call((acme, "owner"), "post", "/api/billing/topups", {"amount_usd": "25"}), 502,
                 code="checkout_failed")
    assert call((acme, "owner"), "get", "/api/billing/balance").json()["balance_micro"] == 0


def test_session_changes_need_the_csrf_token(acme):
    client = Client(enforce_csrf_checks=True)
    client.force_login(acme.users["owner"])
    for method, path, body in [("patch", "/api/billing/limits", {"rate_limit_rpm": 7}),
                               ("patch", "/api/billing/settings", {"low_balance_threshold_usd": "3"}),
                               ("post", "/api/billing/topups", {"amount_usd": "25"}),
                               ("patch", f"/api/billing/keys/{acme.key.pk}/limits", {"rate_limit_rpm": 7})]:
        error = assert_error(call((acme, "owner"), method, path, body, client=client), 403)
        assert "CSRF" in error["message"]
    acme.org.refresh_from_db()
    acme.key.refresh_from_db()
    assert acme.org.rate_limit_rpm is None and acme.key.rate_limit_rpm is None
    assert not BillingProfile.objects.exists() and not Payment.objects.exists()

    token = client.get("/api/billing/balance").cookies["csrftoken"].value  # a read hands out the cookie
    changed = call((acme, "owner"), "patch", "/api/billing/limits", {"rate_limit_rpm": 7}, client=client,
                   headers={"X-CSRFToken": token})
    assert changed.status_code == 200 and changed.json()["rate_limit_rpm"] == 7
    # An API key carries no cookie, so it needs no token (and only reads).
    assert call((acme, "key"), "get", "/api/billing/limits", client=Client(enforce_csrf_checks=True)).json()[
        "rate_limit_rpm"] == 7
