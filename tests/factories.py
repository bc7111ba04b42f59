"""Named tenants for tests: alice's organization and bob's, each with keys and credit."""
from types import SimpleNamespace

from accounts.models import Membership, Organization, User
from accounts.services import api_key_create, organization_get_or_create
from billing.services import credit_grant


def make_org(name: str, credit_micro: int = 0) -> Organization:
    org, _ = organization_get_or_create(name=name)
    if credit_micro:
        credit_grant(organization=org, amount_micro=credit_micro)
    return org


def make_key(org: Organization, name: str = "test", **kwargs):
    """(APIKey, secret)"""
    return api_key_create(organization=org, name=name, **kwargs)


def add_user(org: Organization, email: str, role: str) -> User:
    user = User.objects.create_user(email=email)  # signed in with force_login: no password to hash
    Membership.objects.create(user=user, organization=org, role=role)
    return user


def tenant(name: str) -> SimpleNamespace:
    """An organization with an owner, an admin and a member (<role>@<name>.test) and an API key:
    .org, .users[role], .key, .secret."""
    org = make_org(name)
    users = {role: add_user(org, f"{role}@{name}.test", role) for role in ("owner", "admin", "member")}
    key, secret = make_key(org)
    return SimpleNamespace(org=org, users=users, key=key, secret=secret)
