"""Which organization a dashboard request acts for: the user's current membership.

The current organization's id is kept in the session and always checked against the user's
memberships, so a stale or forged id falls back to another organization of the user, never to
one they do not belong to. Every dashboard query is scoped with `request.membership.organization`.
"""
from accounts.models import Membership

SESSION_KEY = "organization_id"


def memberships_of(user) -> list[Membership]:
    if not user.is_authenticated:
        return []
    return list(Membership.objects.filter(user=user).select_related("organization").order_by("organization__name"))


def current_membership(request) -> Membership | None:
    """The membership the request acts under (cached on the request); None for users without one."""
    if not hasattr(request, "_membership"):
        mine = memberships_of(request.user)
        wanted = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
        chosen = next((m for m in mine if m.organization_id == wanted), mine[0] if mine else None)
        request._memberships = mine
        request._membership = chosen
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


def can_manage(membership: Membership | None) -> bool:
    return membership is not None and membership.role in Membership.MANAGER_ROLES
