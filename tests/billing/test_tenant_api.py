"""/api/billing for each kind of caller: who may read and change what, tenancy, and the figures it shows."""
import json
from datetime import datetime, time, timedelta, timezone as tz
from itertools import count

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Membership, User
from billing.models import BillingProfile, LedgerEntry, Payment, UsageRecord
from billing.services import credit_grant, hold_place, hold_settle, ledger_post
from core.money import Price
from tests.factories import add_user, make_org

pytestmark = [pytest.mark.django_db, pytest.mark.money]

ROLES = ["owner", "admin", "member", "key"]
READS = ["/api/billing/balance", "/api/billing/ledger", "/api/billing/usage", "/api/billing/topups",
         "/api/billing/limits", "/api/billing/settings"]
WRITES = [("patch", "/api/billing/limits", {"rate_limit_rpm": 60}),
          ("patch", "/api/billing/settings", {"low_balance_threshold_usd": "5"}),
          ("post", "/api/billing/topups", {"amount_usd": "25.00"})]
PRICE = Price(input_micro_per_mtok=1_000_000, output_micro_per_mtok=2_000_000)  # a token: 1 micro in, 2 out
_request_ids = count()


def call(who, method, path, body=None, *, org=None, headers=None, client=None):
    """A request as `who`: a role of `who` (a tenant), or its API key with who="key"."""
    tenant_, role = who
    headers = dict(headers or {})
    if role == "key":
        client = client or Client()
        headers.setdefault("Authorization", f"Bearer {tenant_.secret}")
    else:
        if client is None:
            client = Client()
            client.force_login(tenant_.users[role])
    if org is not None:
        headers["X-Organization"] = str(org.pk)
    kwargs = {"headers": headers}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(client, method)(path, **kwargs)


def assert_error(response, status, param=None, code=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def spend(org, key, model, prompt, completion, when, cached=0):
    """A settled request: its ledger charge, and its usage record dated `when`."""
    hold = hold_place(organization=org, api_key=key, request_id=f"req-{next(_request_ids)}", model_id=model,
                      prompt_tokens=prompt, max_tokens=completion, price=PRICE)
    record = hold_settle(hold=hold, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    UsageRecord.objects.filter(pk=record.pk).update(created_at=when)
    return record


def noon(days_ago: int) -> datetime:
    return datetime.combine(timezone.now().date() - timedelta(days=days_ago), time(12), tzinfo=tz.utc)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("path", READS)
def test_every_role_and_api_keys_read_every_endpoint(acme, role, path):
    response = call((acme, role), "get", path)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json" and isinstance(response.json(), dict)


@pytest.mark.parametrize("role", ["member", "key"])
@pytest.mark.parametrize("method, path, body", WRITES)
def test_members_and_api_keys_cannot_change_anything(acme, role, method, path, body):
    error = assert_error(call((acme, role), method, path, body), 403, code="permission_denied")
    expected = "read-only access" if role == "key" else "owners and admins"
    assert expected in error["message"]
    acme.org.refresh_from_db()
    assert acme.org.rate_limit_rpm is None and not Payment.objects.exists()
    assert not BillingProfile.objects.filter(low_balance_threshold_micro__gt=0).exists()


def test_a_key_of_its_own_organization_is_refused_writes_on_its_limits_too(acme):
    path = f"/api/billing/keys/{acme.key.pk}/limits"
    assert call((acme, "key"), "get", path).json()["rate_limit_rpm"] is None
    assert_error(call((acme, "key"), "patch", path, {"rate_limit_rpm": 1}), 403)
    assert_error(call((acme, "member"), "patch", path, {"rate_limit_rpm": 1}), 403)
    acme.key.refresh_from_db()
    assert acme.key.rate_limit_rpm is None


@pytest.mark.parametrize("path", READS)
def test_anonymous_callers_and_bad_keys_get_401(acme, path):
    for headers in ({}, {"Authorization": "Bearer sk-nope"}, {"Authorization": "Basic abc"}):
        assert_error(Client().get(path, headers=headers), 401)
    assert "Sign in" in assert_error(Client().get(path), 401, code="not_authenticated")["message"]


def test_the_organization_header_picks_one_of_the_users_organizations(acme, globex):
    both = acme.users["owner"]
    Membership.objects.create(user=both, organization=globex.org, role="member")
    credit_grant(organization=globex.org, amount_micro=7_000_000)
    client = Client()
    client.force_login(both)
    error = assert_error(client.get("/api/billing/balance"), 400, param="X-Organization",
                         code="organization_required")
    assert "X-Organization" in error["message"]
    assert call((acme, "owner"), "get", "/api/billing/balance", org=globex.org, client=client).json()[
        "balance_micro"] == 7_000_000
    assert call((acme, "owner"), "get", "/api/billing/balance", org=acme.org, client=client).json()[
        "balance_micro"] == 0
    # A member of globex there, so this owner of acme cannot change globex's limits.
    assert_error(call((acme, "owner"), "patch", "/api/billing/limits", {"rate_limit_rpm": 5}, org=globex.org,
                      client=client), 403)
    assert call((acme, "owner"), "patch", "/api/billing/limits", {"rate_limit_rpm": 5}, org=acme.org,
                client=client).status_code == 200


def test_an_organization_that_is_not_yours_is_indistinguishable_from_none(acme, globex):
    credit_grant(organization=globex.org, amount_micro=9_000_000)
    for role in ROLES:
        theirs = call((acme, role), "get", "/api/billing/balance", org=globex.org)
        missing = call((acme, role), "get", "/api/billing/balance", headers={"X-Organization": "987654"})
        error = assert_error(theirs, 404, param="X-Organization", code="organization_not_found")
        assert assert_error(missing, 404, param="X-Organization")["message"] == error["message"].replace(
            str(globex.org.pk), "987654")
        assert "globex" not in theirs.content.decode() and "9000000" not in theirs.content.decode()
        assert_error(call((acme, role), "patch", "/api/billing/limits", {"rate_limit_rpm": 1}, org=globex.org), 404,
                     param="X-Organization")
    globex.org.refresh_from_db()
    assert globex.org.rate_limit_rpm is None
    # Their own organization, named explicitly, is fine for keys and users alike.
    assert call((acme, "key"), "get", "/api/billing/balance", org=acme.org).status_code == 200


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "9" * 40])
def test_a_malformed_organization_header_is_a_400_naming_it(acme, value):
    for role in ("owner", "key"):
        assert_error(call((acme, role), "get", "/api/billing/balance", headers={"X-Organization": value}), 400,
                     param="X-Organization")


def test_a_user_of_no_organization_is_told_so(acme):
    client = Client()
    client.force_login(User.objects.create_user(email="loner@example.test"))
    error = assert_error(client.get("/api/billing/ledger"), 400, param="X-Organization")
    assert "not a member of any organization" in error["message"]


def test_another_tenants_key_is_404_and_untouched(acme, globex):
    path = f"/api/billing/keys/{globex.key.pk}/limits"
    for role in ROLES:
        assert_error(call((acme, role), "get", path), 404, code="key_not_found")
    for role in ("owner", "admin"):
        assert_error(call((acme, role), "patch", path, {"rate_limit_rpm": 1}), 404, code="key_not_found")
    for role in ("member", "key"):  # refused before any lookup: the same answer as for a key of their own
        own = call((acme, role), "patch", f"/api/billing/keys/{acme.key.pk}/limits", {"rate_limit_rpm": 1})
        theirs = call((acme, role), "patch", path, {"rate_limit_rpm": 1})
        assert_error(own, 403)
        assert theirs.status_code == 403 and theirs.json() == own.json()
    for bad in ("abc", "0", "99999999", "1" * 30):
        assert_error(call((acme, "owner"), "get", f"/api/billing/keys/{bad}/limits"), 404)
    globex.key.refresh_from_db()
    assert globex.key.rate_limit_rpm is None


def test_the_balance_shows_credit_holds_and_what_is_available(acme, globex):
    credit_grant(organization=acme.org, amount_micro=12_345_678)
    credit_grant(organization=globex.org, amount_micro=1_000_000)
    spend(acme.org, acme.key, "m", 1_000, 500, noon(0))  # 2000 micro charged
    hold_place(organization=acme.org, api_key=acme.key, request_id="in-flight", model_id="m", prompt_tokens=100,
               max_tokens=200, price=PRICE)  # 500 micro held
    for role in ROLES:
        assert call((acme, role), "get", "/api/billing/balance").json() == {
            "balance_micro": 12_343_678, "held_micro": 500, "available_micro": 12_343_178,
            "balance_usd": "12.343678", "held_usd": "0.0005", "available_usd": "12.343178", "currency": "usd",
        }
    fresh = make_org("initech")
    add_user(fresh, "o@initech.test", "owner")
    client = Client()
    client.force_login(fresh.memberships.get().user)
    assert client.get("/api/billing/balance").json()["balance_usd"] == "0.00"


def test_the_ledger_lists_newest_first_with_its_filter_and_pages(acme, globex):
    owner = acme.users["owner"]
    credit_grant(organization=acme.org, amount_micro=10_000_000, description="welcome", created_by=owner)
    spend(acme.org, acme.key, "m", 300, 100, noon(0))
    ledger_post(organization=acme.org, kind="refund", amount_micro=250_000, description="outage",
                reference="incident-7")
    credit_grant(organization=globex.org, amount_micro=3_000_000)

    listing = call((acme, "member"), "get", "/api/billing/ledger").json()
    assert listing["object"] == "list" and listing["total"] == 3 and listing["has_more"] is False
    assert [e["kind"] for e in listing["data"]] == ["refund", "usage", "grant"]
    refund, usage, grant = listing["data"]
    assert refund == {**refund, "amount_micro": 250_000, "amount_usd": "0.25", "balance_after_micro": 10_249_500,
                      "balance_after_usd": "10.2495", "description": "outage", "reference": "incident-7",
                      "created_by": None}
    assert usage["amount_micro"] == -500 and usage["amount_usd"] == "-0.0005" and usage["reference"].startswith("req-")
    assert grant["created_by"] == "owner@acme.test" and isinstance(grant["created_at"], int)
    assert grant["id"] == LedgerEntry.objects.get(description="welcome").pk

    only_usage = call((acme, "key"), "get", "/api/billing/ledger?kind=usage").json()
    assert [e["id"] for e in only_usage["data"]] == [usage["id"]] and only_usage["total"] == 1
    page = call((acme, "owner"), "get", "/api/billing/ledger?limit=2&page=2").json()
    assert [e["kind"] for e in page["data"]] == ["grant"] and page["offset"] == 2
    assert_error(call((acme, "owner"), "get", "/api/billing/ledger?kind=bonus"), 400, param="kind")
    assert_error(call((acme, "owner"), "get", "/api/billing/ledger?limit=0"), 400, param="limit")


def test_malformed_bodies_and_methods_get_error_objects(acme):
    client = Client()
    client.force_login(acme.users["owner"])
    assert_error(client.patch("/api/billing/limits", data=b"{nope", content_type="application/json"), 400)
    assert_error(client.patch("/api/billing/limits", data=b"rate_limit_rpm=5", content_type="text/plain"), 415)
    assert_error(client.put("/api/billing/limits", data=b"{}", content_type="application/json"), 405,
                 code="method_not_allowed")
    assert_error(client.delete("/api/billing/settings"), 405)
    assert_error(client.post("/api/billing/balance", data=b"{}", content_type="application/json"), 405)
    assert_error(client.get("/api/billing/nothing-here"), 404, code="unknown_url")
    assert client.get("/api/billing/balance", headers={"Accept": "text/html"})["Content-Type"] == "application/json"
    acme.org.refresh_from_db()
    assert acme.org.rate_limit_rpm is None
