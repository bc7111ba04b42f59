"""Access rules of the dashboard pages: signed in, a member of the current organization, a manager."""
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect

from accounts.tenancy import can_manage, current_membership


def member_required(view):
    """Signed in and a member of some organization; the view gets `request.membership`."""

    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        membership = current_membership(request)
        if membership is None:
            return redirect("organization-create")
        request.membership = membership
        request.organization = membership.organization
        return view(request, *args, **kwargs)

    return wrapped


def manager_required(view):
    """Owners and admins only; members get 403."""

    @member_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not can_manage(request.membership):
            raise PermissionDenied("Only the organization's owners and admins can do this.")
        return view(request, *args, **kwargs)

    return wrapped
