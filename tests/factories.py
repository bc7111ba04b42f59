"""Named tenants for tests: alice's organization and bob's, each with keys and credit."""
from accounts.models import Organization
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
