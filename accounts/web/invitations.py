"""Accepting an invitation from its emailed link: sign in (or up) as the invited email, then join."""
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import redirect, render

from accounts.memberships import InvitationError, invitation_accept, invitation_check
from accounts.models import Invitation
from accounts.tenancy import switch_organization

TEMPLATE = "dashboard/team/invitation.html"
STATUS = {"unknown": 404, "used": 410, "expired": 410, "wrong_email": 403, "member": 409}


def _refused(request, error: InvitationError, invitation):
    context = {"error": str(error), "reason": error.reason, "invitation": invitation}
    return render(request, TEMPLATE, context, status=STATUS[error.reason])


def invitation_accept_view(request, token):
    invitation = Invitation.objects.select_related("organization", "invited_by").filter(token=token).first()
    if not request.user.is_authenticated:
        if request.method == "POST":
            return redirect_to_login(request.path)
        try:
            invitation_check(invitation=invitation, user=None)
        except InvitationError as error:
            return _refused(request, error, invitation)
        return render(request, TEMPLATE, {"invitation": invitation, "next": request.path})
    if request.method == "POST":
        try:
            membership = invitation_accept(token=token, user=request.user)
        except InvitationError as error:
            return _refused(request, error, invitation)
        switch_organization(request, membership.organization_id)
        messages.success(request, f"You joined {membership.organization.name} as {membership.get_role_display()}.")
        return redirect("home")
    try:
        invitation_check(invitation=invitation, user=request.user)
    except InvitationError as error:
        return _refused(request, error, invitation)
    return render(request, TEMPLATE, {"invitation": invitation})
