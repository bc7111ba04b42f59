"""The team page: members and pending invitations; managers invite, revoke, change roles and remove."""
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.memberships import (TeamError, invitation_create, invitation_revoke, invitation_send, member_leave,
                                  member_remove, member_role_change, pending_invitations)
from accounts.models import Invitation, Membership
from accounts.web.decorators import manager_required, member_required
from accounts.web.forms import InviteForm, RoleForm, role_choices
from accounts.web.links import site_link


def _page(request, invite_form=None, status=200):
    organization = request.organization
    members = Membership.objects.filter(organization=organization).select_related("user").order_by(
        "created_at", "pk")
    context = {
        "members": members,
        "invitations": pending_invitations(organization).select_related("invited_by"),
        "invite_form": invite_form or InviteForm(actor=request.membership),
        "role_choices": role_choices(request.membership),
        "is_owner": request.membership.role == Membership.Role.OWNER,
        "owner_count": sum(1 for m in members if m.role == Membership.Role.OWNER),
    }
    return render(request, "dashboard/team/team.html", context, status=status)


@member_required
def team(request):
    return _page(request)


@manager_required
@require_POST
def invite(request):
    form = InviteForm(request.POST, actor=request.membership)
    if form.is_valid():
        try:
            invitation = invitation_create(actor=request.membership, **form.cleaned_data)
        except TeamError as error:
            form.add_error("email", str(error))
        else:
            invitation_send(invitation=invitation, accept_url=site_link("invitation-accept", invitation.token))
            messages.success(request, f"Invitation sent to {invitation.email} as {invitation.get_role_display()}.")
            return redirect("team")
    return _page(request, invite_form=form, status=400)


@manager_required
@require_POST
def invitation_revoke_view(request, pk):
    invitation = get_object_or_404(Invitation, pk=pk, organization=request.organization, accepted_at__isnull=True)
    try:
        invitation_revoke(actor=request.membership, invitation=invitation)
    except TeamError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"The invitation to {invitation.email} was revoked.")
    return redirect("team")


@manager_required
@require_POST
def member_role(request, pk):
    membership = get_object_or_404(Membership.objects.select_related("user"), pk=pk,
                                   organization=request.organization)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose owner, admin or member.")
        return redirect("team")
    try:
        member_role_change(actor=request.membership, membership=membership, role=form.cleaned_data["role"])
    except TeamError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{membership.user.email} is now {membership.get_role_display()}.")
    return redirect("team")


@manager_required
@require_POST
def member_remove_view(request, pk):
    membership = get_object_or_404(Membership.objects.select_related("user"), pk=pk,
                                   organization=request.organization)
    try:
        member_remove(actor=request.membership, membership=membership)
    except TeamError as error:
        messages.error(request, str(error))
        return redirect("team")
    if membership.user_id == request.user.pk:
        messages.success(request, f"You left {request.organization.name}.")
        return redirect("home")
    messages.success(request, f"{membership.user.email} was removed from {request.organization.name}.")
    return redirect("team")


@member_required
@require_POST
def leave(request):
    try:
        member_leave(membership=request.membership)
    except TeamError as error:
        messages.error(request, str(error))
        return redirect("team")
    messages.success(request, f"You left {request.organization.name}.")
    return redirect("home")
