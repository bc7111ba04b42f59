from accounts.tenancy import can_manage, current_membership


def tenancy(request) -> dict:
    """The current organization, the user's other organizations and whether they may manage it."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    membership = current_membership(request)
    return {
        "membership": membership,
        "current_organization": membership.organization if membership else None,
        "memberships": request._memberships,
        "can_manage": can_manage(membership),
    }
