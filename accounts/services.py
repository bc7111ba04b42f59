"""Writes to accounts: organizations, memberships and API keys."""
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from accounts.models import APIKey, Membership, Organization


@transaction.atomic
def organization_get_or_create(*, name: str, owner=None) -> tuple[Organization, bool]:
    org, created = Organization.objects.get_or_create(name=name)
    if owner is not None:
        Membership.objects.get_or_create(user=owner, organization=org, defaults={"role": Membership.Role.OWNER})
    if created:
        from billing.services import account_for  # the account exists from the first day, at zero

        account_for(organization=org)
    return org, created


def api_key_create(
    *, organization: Organization, name: str, created_by=None, expires_at: datetime | None = None
) -> tuple[APIKey, str]:
    """Create a key and return it with its secret, which is never stored and never shown again."""
    secret = APIKey.generate_secret()
    key = APIKey(organization=organization, name=name, created_by=created_by, expires_at=expires_at)
    key.set_secret(secret)
    key.save()
    return key, secret


def api_key_revoke(*, key: APIKey) -> None:
    APIKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db(fields=["revoked_at"])
