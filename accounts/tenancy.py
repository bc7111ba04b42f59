"""Which organization a request acts for, and in what role: the one resolver of every surface.

- A signed-in user's page (`current_membership`, `switch_organization`): the organization chosen in the
  session, always checked against the user's memberships, so a stale or forged id falls back to another
  organization of the user (the first by name), never to one they do not belong to.
- The playground's socket (`socket_membership`): the same rule, with the user and the session of the
  Channels scope (the socket's HTTP handshake carried the session cookie).
- The billing API (`api_tenant`): an API key acts for its own organization; a signed-in user for the one
  named by the `X-Organization` header, or their only one. An organization the caller does not belong to
  is answered exactly like one that does not exist.

Roles: owners and admins manage (`can_manage`, `Tenant.can_change`); members read; an API key reads.
"""
import re
from dataclasses import dataclass
from types import SimpleNamespace

from accounts.models import APIKey, Membership, Organization
from core.errors import APIError

SESSION_KEY = "organization_id"
HEADER = "X-Organization"
_ID = re.compile(r"[0-9]{1,18}")


def can_manage(membership: Membership | None) -> bool:
    return membership is not None and membership.role in Membership.MANAGER_ROLES


# -- a signed-in user: the organization chosen in their session ------------------------------------------------


def memberships_of(user) -> list[Membership]:
    if user is None or not user.is_authenticated:
        return []
    return list(Membership.objects.filter(user=user).select_related("organization").order_by("organization__name"))


def _chosen(memberships: list[Membership], session) -> Membership | None:
    wanted = session.get(SESSION_KEY) if session is not None else None
    return next((m for m in memberships if m.organization_id == wanted), memberships[0] if memberships else None)


def current_membership(request) -> Membership | None:
    """The membership a signed-in user's request acts under (cached on the request); None for users without
    one."""
    if not hasattr(request, "_membership"):
        mine = memberships_of(request.user)
        request._memberships = mine
        request._membership = _chosen(mine, getattr(request, "session", None))
    return request._membership


def switch_organization(request, organization_id) -> Membership | None:
    """Make one of the user's organizations current; None (and no change) if they are not a member.

    The id is matched as text against the user's memberships, so whatever a form posts is safe here.
    """
    mine = memberships_of(request.user)
    membership = next((m for m in mine if str(m.organization_id) == str(organization_id)), None)
    if membership is not None:
        request.session[SESSION_KEY] = membership.organization_id
        request._memberships, request._membership = mine, membership
    return membership


# -- a Channels socket: the user of its scope and the organization chosen in its session -----------------------


def socket_membership(scope) -> Membership | None:
    """The membership a socket acts under: the page's rule (current_membership) for the scope's user and
    session; None when the user is not signed in or belongs to no organization. Reads the database."""
    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return None
    return current_membership(SimpleNamespace(user=user, session=scope.get("session")))


def member_organization(user, organization: Organization) -> Organization | None:
    """The organization as it is now (its limits may have changed), while the user is still its member."""
    membership = (Membership.objects.filter(user=user, organization=organization).select_related("organization")
                  .first())
    return membership.organization if membership is not None else None


# -- the API: an API key's organization, or the one a signed-in user names ------------------------------------


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


def key_tenant(key: APIKey, raw: str | None = None) -> Tenant:
    """An API key acts for its own organization; an X-Organization header (`raw`) may only name that one."""
    if raw is not None and _header_id(raw) != key.organization_id:
        raise _not_found(raw)
    return Tenant(organization=key.organization, role=None, api_key=key)


def user_tenant(user, raw: str | None = None) -> Tenant:
    """A signed-in user acts for the organization the X-Organization header (`raw`) names, or their only one."""
    memberships = Membership.objects.filter(user=user).select_related("organization")
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


def api_tenant(request) -> Tenant:
    """The tenant of an authenticated DRF request: its API key's (request.auth), else its signed-in user's."""
    raw = request.headers.get(HEADER)
    if isinstance(request.auth, APIKey):
        return key_tenant(request.auth, raw)
    return user_tenant(request.user, raw)
