"""Writes to accounts: organizations, memberships and API keys."""
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from accounts.models import APIKey, Membership, Organization, SpendWindow


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
    *, organization: Organization, name: str, created_by=None, expires_at: datetime | None = None,
    allowed_models=(), rate_limit_rpm: int | None = None, rate_limit_tpm: int | None = None,
    spend_cap_micro: int | None = None, spend_cap_window: str = SpendWindow.MONTH,
) -> tuple[APIKey, str]:
    """Create a key and return it with its secret, which is never stored and never shown again.

    `allowed_models` empty means every model; the limits are the key's own (None: none).
    """
    secret = APIKey.generate_secret()
    key = APIKey(organization=organization, name=name, created_by=created_by, expires_at=expires_at,
                 allowed_models=list(allowed_models), rate_limit_rpm=rate_limit_rpm, rate_limit_tpm=rate_limit_tpm,
                 spend_cap_micro=spend_cap_micro, spend_cap_window=spend_cap_window)
    key.set_secret(secret)
    key.save()
    return key, secret


def api_key_revoke(*, key: APIKey) -> None:
    APIKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db(fields=["revoked_at"])
