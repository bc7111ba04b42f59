"""Creating organizations and switching between them: every page acts for the one chosen, and only ever
for an organization the user belongs to."""
import threading

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import Client

from accounts.models import Membership, Organization, User
from accounts.tenancy import SESSION_KEY
from billing.models import CreditAccount
from tests.factories import make_key, make_org

pytestmark = [pytest.mark.django_db, pytest.mark.money]


def user_client(email="sailor@example.test", **memberships) -> tuple[User, Client]:
    user = User.objects.create_user(email, "a long password 123")
    for org, role in memberships.items():
        Membership.objects.create(user=user, organization=Organization.objects.get(name=org), role=role)
    client = Client()
    client.force_login(user)
    return user, client


def test_the_home_page_leads_to_login_then_to_creating_an_organization_then_to_usage():
    assert Client().get("/").url.startswith("/accounts/login/")
    _, client = user_client()
    assert client.get("/").url == "/organizations/new/"
    assert client.get("/keys/").url == "/organizations/new/"  # no page without an organization
    response = client.post("/organizations/new/", {"name": "Skiff"})
    assert response.status_code == 302
    org = Organization.objects.get(name="Skiff")
    assert Membership.objects.get(organization=org).role == "owner"
    assert CreditAccount.objects.get(organization=org).balance_micro == 0
    assert client.get("/").url == "/usage/"


@pytest.mark.parametrize("name, error", [
    ("", "This field is required."),
    ("   ", "This field is required."),
    ("taken", "already exists"),
    ("TAKEN", "already exists"),
    ("x" * 101, "at most 100 characters"),
])
def test_a_bad_organization_name_is_a_field_error_and_creates_nothing(name, error):
    make_org("taken")
    _, client = user_client()
    response = client.post("/organizations/new/", {"name": name})
    assert response.status_code == 200
    assert error in response.content.decode()
    assert Organization.objects.count() == 1


def test_switching_shows_the_chosen_organizations_pages():
    skiff, ketch = make_org("skiff"), make_org("ketch")
    make_key(skiff, "skiff-key")
    make_key(ketch, "ketch-key")
    _, client = user_client(skiff="owner", ketch="member")
    page = client.get("/keys/").content.decode()
    assert "ketch-key" in page and "skiff-key" not in page  # the first by name, until one is chosen
    assert client.post("/organizations/switch/", {"organization": skiff.pk}).status_code == 302
    page = client.get("/keys/").content.decode()
    assert "skiff-key" in page and "ketch-key" not in page
    assert client.session[SESSION_KEY] == skiff.pk


def test_switching_to_an_organization_one_is_not_in_changes_nothing():
    mine, theirs = make_org("mine"), make_org("theirs")
    make_key(theirs, "their-key")
    _, client = user_client(mine="owner")
    for wanted in (theirs.pk, "999999", "9" * 30, "abc", ""):
        response = client.post("/organizations/switch/", {"organization": wanted}, follow=True)
        assert "You are not a member of that organization." in response.content.decode()
    assert "their-key" not in client.get("/keys/").content.decode()


def test_a_stale_organization_in_the_session_falls_back_to_one_of_the_users():
    mine, theirs = make_org("mine"), make_org("theirs")
    make_key(mine, "my-key")
    make_key(theirs, "their-key")
    _, client = user_client(mine="owner")
    session = client.session
    session[SESSION_KEY] = theirs.pk  # e.g. removed from it since, or a tampered session
    session.save()
    page = client.get("/keys/").content.decode()
    assert "my-key" in page and "their-key" not in page


def test_the_switch_is_a_post_with_csrf():
    mine = make_org("mine")
    user, _ = user_client(mine="owner")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/organizations/switch/").status_code == 405
    assert client.post("/organizations/switch/", {"organization": mine.pk}).status_code == 403


def test_the_switch_goes_home_whatever_next_it_is_given():
    mine = make_org("mine")
    _, client = user_client(mine="owner")
    response = client.post("/organizations/switch/", {"organization": mine.pk, "next": "https://evil.example/x"})
    assert response.status_code == 302 and response.url == "/"


@pytest.mark.django_db(transaction=True)
def test_concurrent_creators_of_one_name_in_any_case_get_one_organization_and_one_owner(monkeypatch):
    """Every creator passes the form's check before any of them creates: the database alone decides."""
    from accounts.web.organizations import OrganizationForm

    names = ["Skiff", "skiff", "SKIFF", "Skiff", "sKiff", "skiFF"]
    clients = [user_client(f"sailor{i}@example.test")[1] for i in range(len(names))]
    all_checked = threading.Barrier(len(names), timeout=30)
    clean_name = OrganizationForm.clean_name

    def clean_name_then_wait(form):
        name = clean_name(form)
        all_checked.wait()
        return name

    monkeypatch.setattr(OrganizationForm, "clean_name", clean_name_then_wait)
    responses = [None] * len(names)

    def create(i):
        try:
            responses[i] = clients[i].post("/organizations/new/", {"name": names[i]})
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.status_code for r in responses].count(302) == 1
    refused = [r for r in responses if r.status_code == 200]
    assert len(refused) == len(names) - 1
    assert all("An organization with this name already exists." in r.content.decode() for r in refused)
    org = Organization.objects.get()
    owner = Membership.objects.get()
    assert owner.organization == org and owner.role == "owner"
    assert CreditAccount.objects.filter(organization=org).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_a_name_that_differs_only_in_case():
    make_org("Ketch")
    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.create(name="KETCH")
