"""Writes to accounts: organizations, memberships and API keys."""
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import APIKey, Membership, Organization, SpendWindow


class OrganizationNameTaken(Exception):
    """Another organization has this name, in any case."""


@transaction.atomic
def organization_create(*, name: str, owner=None) -> Organization:
    """A new organization with `owner` as its owner; OrganizationNameTaken when the name is in use in any case.

    The database's unique index on the lower-cased name decides between concurrent creators: exactly one
    gets the organization, the others get OrganizationNameTaken and join nothing.
    """
    try:
        with transaction.atomic():
            org = Organization.objects.create(name=name)
    except IntegrityError:
        raise OrganizationNameTaken(name) from None
    if owner is not None:
        Membership.objects.create(user=owner, organization=org, role=Membership.Role.OWNER)
    return org  # its credit account is opened by billing (billing.signals), in this transaction


def organization_get_or_create(*, name: str, owner=None) -> tuple[Organization, bool]:
    """The organization with this name in any case, or a new one owned by `owner` (who never joins an existing
    one here)."""
    existing = Organization.objects.filter(name__iexact=name).order_by("pk").first()
    if existing is not None:
        return existing, False
    try:
        return organization_create(name=name, owner=owner), True
    except OrganizationNameTaken:  # created meanwhile
        return Organization.objects.filter(name__iexact=name).order_by("pk").first(), False


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


# Writing last_used_at on every request would turn each completion into a write;
# once a minute is as precise as anyone reads it.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_record_use(*, key: APIKey) -> None:
    """Note that the key was just used (at most once per LAST_USED_RESOLUTION)."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        APIKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
