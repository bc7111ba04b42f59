"""One API-key parser (accounts.auth) and one tenancy resolver (accounts.tenancy) behind every surface.

The same bad key gets the same 401 error on /v1/chat/completions, /v1/models, /api/sessions and /api/billing;
the web page, the API and the playground's socket act for the same organization.
"""
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.test import Client
from django.utils import timezone

from accounts import auth, tenancy
from accounts.models import APIKey, Membership, User
from accounts.services import LAST_USED_RESOLUTION, api_key_revoke
from accounts.sessions import session_create
from accounts.tenancy import SESSION_KEY
from tests.factories import make_key, make_org

pytestmark = pytest.mark.money

SURFACES = [
    ("post", "/v1/chat/completions"),
    ("get", "/v1/models"),
    ("get", "/api/sessions"),
    ("get", "/api/billing/balance"),
]
MALFORMED = ["Basic c2stYWJj", "Bearer", "Bearer    ", "sk-abc", "Token sk-abc"]


def request(method: str, path: str, authorization: str | None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]}
    if method == "post":
        return Client().post(path, data=json.dumps(body), content_type="application/json", headers=headers)
    return Client().get(path, headers=headers)


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def errors_everywhere(authorization: str | None, status: int = 401) -> list[dict]:
    return [error_of(request(method, path, authorization), status) for method, path in SURFACES]


def assert_one_answer(errors: list[dict], message: str) -> None:
    assert all(e == {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
               for e in errors), errors


# -- the same key, the same error on every surface -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("header", MALFORMED)
def test_a_malformed_header_is_the_same_401_everywhere(header):
    assert_one_answer(errors_everywhere(header), auth.MALFORMED)


@pytest.mark.django_db
@pytest.mark.parametrize("secret", ["sk-nope", "nope-at-all", "sk-" + "x" * 500])
def test_an_unknown_key_is_the_same_401_everywhere(secret):
    make_key(make_org("alice"))
    for scheme in ("Bearer", "Api-Key"):
        assert_one_answer(errors_everywhere(f"{scheme} {secret}"), auth.unknown_key(secret))


@pytest.mark.django_db
def test_a_revoked_key_is_the_same_401_everywhere():
    key, secret = make_key(make_org("alice"))
    assert request("get", "/v1/models", f"Bearer {secret}").status_code == 200
    api_key_revoke(key=key)
    assert_one_answer(errors_everywhere(f"Bearer {secret}"), auth.unknown_key(secret))


@pytest.mark.django_db
def test_an_expired_key_is_the_same_401_everywhere():
    _, secret = make_key(make_org("alice"), expires_at=timezone.now() - timedelta(seconds=1))
    message = auth.unknown_key(secret)
    assert message.startswith("Incorrect API key provided: sk-") and "unknown, revoked or expired" in message
    assert_one_answer(errors_everywhere(f"Bearer {secret}"), message)


@pytest.mark.django_db
def test_a_missing_key_is_answered_as_before():
    """/v1 and /api/sessions ask for a key; the billing API also takes a signed-in session and says so."""
    *key_only, billing = errors_everywhere(None)
    assert_one_answer(key_only, auth.NO_KEY)
    assert billing["code"] == "not_authenticated" and "Sign in" in billing["message"]


@pytest.mark.django_db
def test_a_good_key_passes_everywhere():
    org = make_org("alice")
    _, secret = make_key(org)
    for method, path in SURFACES[1:]:
        assert request(method, path, f"Bearer {secret}").status_code == 200, path


# -- the parser: cheap checks before any hashing or query ------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, "", *MALFORMED, "Bearer nope", "Bearer sk-" + "x" * 500])
def test_shape_and_size_are_judged_before_hashing_or_querying(header, monkeypatch, django_assert_num_queries):
    def no_hashing(secret):
        raise AssertionError("hashed")

    monkeypatch.setattr("accounts.selectors.key_digest", no_hashing)
    with django_assert_num_queries(0), pytest.raises(auth.KeyRejected) as rejected:
        auth.authenticate(header)
    assert rejected.value.status == 401 and rejected.value.code == "invalid_api_key"
    assert isinstance(rejected.value, auth.KeyMissing) == (not header)


@pytest.mark.django_db
def test_the_parser_records_use_at_most_once_a_minute(django_assert_num_queries):
    key, secret = make_key(make_org("alice"))
    with django_assert_num_queries(2):  # the lookup, then the write
        assert auth.authenticate(f"Bearer {secret}") == key
    with django_assert_num_queries(1):  # the lookup only
        assert auth.authenticate(f"Api-Key {secret}").last_used_at is not None
    APIKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - LAST_USED_RESOLUTION)
    with django_assert_num_queries(2):
        auth.authenticate(f"bearer  {secret} ")


@pytest.mark.django_db
def test_selectors_only_read(django_assert_num_queries):
    from accounts.selectors import api_key_for_secret

    key, secret = make_key(make_org("alice"))
    with django_assert_num_queries(1):
        assert api_key_for_secret(secret) == key
    key.refresh_from_db()
    assert key.last_used_at is None


# -- one resolver: the page, the API and the socket act for the same organization ------------------------------


def member_client(user: User, organization=None) -> Client:
    client = Client()
    client.force_login(user)
    if organization is not None:
        session = client.session
        session[SESSION_KEY] = organization.pk
        session.save()
    return client


def page_organization(client: Client):
    return client.get("/keys/").context["current_organization"]


def api_balance(client: Client, **headers) -> int:
    response = client.get("/api/billing/balance", headers=headers)
    assert response.status_code == 200, response.content
    return response.json()["balance_micro"]


async def socket_organization(client: Client) -> dict:
    """The playground socket's first message, opened as the page opens it (the session cookie, the site's
    Origin) through the whole ASGI application."""
    from config.asgi import application

    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"),
               (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]
    socket = ApplicationCommunicator(application, {
        "type": "websocket", "path": "/ws/playground/", "raw_path": b"/ws/playground/", "query_string": b"",
        "headers": headers, "subprotocols": [], "client": ("127.0.0.1", 50000), "server": ("localhost", 80)})
    await socket.send_input({"type": "websocket.connect"})
    assert (await socket.receive_output(10))["type"] == "websocket.accept"
    message = await socket.receive_output(10)
    await socket.send_input({"type": "websocket.disconnect", "code": 1000})
    await socket.wait(10)
    return json.loads(message["text"])


@pytest.fixture
def two_orgs(transactional_db):
    alice, bob = make_org("alice", credit_micro=1_000_000), make_org("bob", credit_micro=2_000_000)
    user = User.objects.create_user(email="ann@example.test", password="a long passphrase 42")
    Membership.objects.create(user=user, organization=alice, role=Membership.Role.MEMBER)
    return alice, bob, user


async def test_a_member_of_one_organization_acts_for_it_on_the_page_the_api_and_the_socket(two_orgs):
    alice, bob, user = two_orgs
    client = await sync_to_async(member_client)(user)
    assert await sync_to_async(page_organization)(client) == alice
    assert await sync_to_async(api_balance)(client) == 1_000_000  # alice's, with no X-Organization
    assert await socket_organization(client) == {"type": "ready", "organization": "alice"}


async def test_the_organization_chosen_in_the_session_is_the_pages_and_the_sockets(two_orgs):
    alice, bob, user = two_orgs
    await sync_to_async(Membership.objects.create)(user=user, organization=bob, role=Membership.Role.ADMIN)
    client = await sync_to_async(member_client)(user, bob)
    assert await sync_to_async(page_organization)(client) == bob
    assert await socket_organization(client) == {"type": "ready", "organization": "bob"}
    # The API names its organization in a header; without one a member of several is asked to.
    assert await sync_to_async(api_balance)(client, **{"X-Organization": str(bob.pk)}) == 2_000_000
    response = await sync_to_async(client.get)("/api/billing/balance")
    assert error_of(response, 400)["code"] == "organization_required"
    # A session naming an organization the user does not belong to falls back to one of theirs (the first).
    carol = await sync_to_async(make_org)("carol")
    client = await sync_to_async(member_client)(user, carol)
    assert await sync_to_async(page_organization)(client) == alice
    assert await socket_organization(client) == {"type": "ready", "organization": "alice"}


@pytest.mark.django_db
def test_an_api_key_acts_for_its_own_organization_on_every_api():
    alice, bob = make_org("alice", credit_micro=1_000_000), make_org("bob", credit_micro=2_000_000)
    _, secret = make_key(bob)
    session_create(organization=alice, api_key=None, model="tiny-chat")
    mine = session_create(organization=bob, api_key=None, model="tiny-chat")
    auth_header = {"Authorization": f"Bearer {secret}"}
    assert Client().get("/api/billing/balance", headers=auth_header).json()["balance_micro"] == 2_000_000
    assert [s["id"] for s in Client().get("/api/sessions", headers=auth_header).json()["data"]] == [mine.pk]
    response = Client().get("/api/billing/balance", headers={**auth_header, "X-Organization": str(alice.pk)})
    assert error_of(response, 404)["code"] == "organization_not_found"


@pytest.mark.django_db
def test_the_resolvers_entry_points_agree():
    alice, bob = make_org("alice"), make_org("bob")
    user = User.objects.create_user(email="ann@example.test")
    for org, role in ((alice, Membership.Role.OWNER), (bob, Membership.Role.MEMBER)):
        Membership.objects.create(user=user, organization=org, role=role)
    key, _ = make_key(bob)

    class Request:
        session = {SESSION_KEY: bob.pk}

    page = Request()
    page.user = user
    assert tenancy.current_membership(page).organization == bob
    assert tenancy.socket_membership({"user": user, "session": {SESSION_KEY: bob.pk}}).organization == bob
    assert tenancy.user_tenant(user, str(bob.pk)) == tenancy.Tenant(organization=bob, role="member")
    assert tenancy.key_tenant(key) == tenancy.Tenant(organization=bob, role=None, api_key=key)
    assert not tenancy.user_tenant(user, str(bob.pk)).can_change and tenancy.user_tenant(user, str(alice.pk)).can_change
    assert not tenancy.key_tenant(key).can_change
    assert tenancy.member_organization(user, bob) == bob
    Membership.objects.filter(user=user, organization=bob).delete()
    assert tenancy.member_organization(user, bob) is None
    assert tenancy.socket_membership({"user": user, "session": {SESSION_KEY: bob.pk}}).organization == alice
