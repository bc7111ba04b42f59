"""Who may read and change an organization's billing.

Signed-in users act for one of their organizations, named by the `X-Organization` header (or their only
one); an API key acts for its own organization and only reads. Members read; owners and admins change.
An organization the caller does not belong to is answered exactly like one that does not exist.
"""
import re
from dataclasses import dataclass

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import APIKey, Membership, Organization
from core.errors import APIError

HEADER = "X-Organization"
_ID = re.compile(r"[0-9]{1,18}")
KEY_READ_ONLY = ("API keys have read-only access to billing. Sign in as an owner or admin of the organization "
                 "to change it.")


@dataclass(frozen=True)
class Tenant:
    """The organization a request acts for, and in what capacity."""

    organization: Organization
    role: str | None  # the user's membership role; None for an API key
    api_key: APIKey | None = None

    @property
    def can_change(self) -> bool:
        return self.api_key is None and self.role in Membership.MANAGER_ROLES


def _not_found(raw: str) -> APIError:
    return APIError(404, f"No organization found with id '{raw[:40]}'.", param=HEADER, code="organization_not_found")


def _header_id(raw: str) -> int:
    raw = raw.strip()
    if not _ID.fullmatch(raw):
        raise APIError(400, f"The {HEADER} header must be an organization id (a positive integer).", param=HEADER,
                       code="invalid_organization")
    return int(raw)


def resolve_tenant(request) -> Tenant:
    raw = request.headers.get(HEADER)
    if isinstance(request.auth, APIKey):
        key = request.auth
        if raw is not None and _header_id(raw) != key.organization_id:
            raise _not_found(raw)
        return Tenant(organization=key.organization, role=None, api_key=key)
    memberships = Membership.objects.filter(user=request.user).select_related("organization")
    if raw is None:
        mine = list(memberships.order_by("organization_id")[:2])
        if len(mine) == 1:
            return Tenant(organization=mine[0].organization, role=mine[0].role)
        message = ("You are not a member of any organization." if not mine else
                   f"You belong to several organizations: name one with the {HEADER} header (its id).")
        raise APIError(400, message, param=HEADER, code="organization_required")
    membership = memberships.filter(organization_id=_header_id(raw)).first()
    if membership is None:
        raise _not_found(raw)
    return Tenant(organization=membership.organization, role=membership.role)


class BillingAccess(BasePermission):
    """Authenticated, acting for an organization of theirs (set as `view.tenant`), and allowed to change it."""

    message = None

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False  # the view answers 401
        view.tenant = resolve_tenant(request)
        if request.method in SAFE_METHODS or view.tenant.can_change:
            return True
        if view.tenant.api_key is not None:
            self.message = KEY_READ_ONLY
        else:
            self.message = (f"Only the organization's owners and admins can change its billing; you are a "
                            f"{view.tenant.role}.")
        return False
