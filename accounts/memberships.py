"""Writes to an organization's team: invitations, accepting them, roles, removing members, leaving.

Every rule about who may do what to whom lives here, so the pages and any later API share them:
owners and admins manage the team, only owners invite, promote, demote or remove owners, and an
organization always keeps at least one owner. Breaking a rule raises `TeamError` with a message
meant for the user.
"""
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.models import Invitation, Membership

Role = Membership.Role


class TeamError(Exception):
    """A team change the rules refuse; str() is the message shown to the user."""


class InvitationError(TeamError):
    """An invitation that cannot be accepted; `reason` is unknown, used, expired, wrong_email or member."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _require_manager(actor: Membership) -> None:
    if actor.role not in Membership.MANAGER_ROLES:
        raise TeamError("Only the organization's owners and admins can manage the team.")


def _require_owner_for(actor: Membership, role: str, action: str) -> None:
    if role == Role.OWNER and actor.role != Role.OWNER:
        raise TeamError(f"Only owners can {action} owners.")


def _keep_an_owner(membership: Membership, action: str) -> None:
    """Refuse when `membership` is its organization's last owner (owners are locked while we look)."""
    if membership.role != Role.OWNER:
        return
    owners = list(Membership.objects.select_for_update().filter(
        organization_id=membership.organization_id, role=Role.OWNER).values_list("pk", flat=True))
    if owners == [membership.pk]:
        raise TeamError(f"The last owner cannot {action}. Make another member an owner first.")


def pending_invitations(organization):
    return Invitation.objects.filter(organization=organization, accepted_at__isnull=True,
                                     expires_at__gt=timezone.now()).order_by("-created_at")


@transaction.atomic
def invitation_create(*, actor: Membership, email: str, role: str) -> Invitation:
    _require_manager(actor)
    _require_owner_for(actor, role, "invite")
    email = email.strip().lower()
    organization = actor.organization
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise TeamError(f"{email} is already a member of {organization.name}.")
    if pending_invitations(organization).filter(email__iexact=email).exists():
        raise TeamError(f"{email} already has a pending invitation. Revoke it to send a new one.")
    return Invitation.objects.create(organization=organization, email=email, role=role, invited_by=actor.user)


def invitation_send(*, invitation: Invitation, accept_url: str) -> None:
    """Email the invitation with the link that accepts it."""
    context = {"invitation": invitation, "accept_url": accept_url}
    subject = f"You are invited to join {invitation.organization.name}"
    body = render_to_string("dashboard/team/invitation_email.txt", context)
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [invitation.email])


def invitation_revoke(*, actor: Membership, invitation: Invitation) -> None:
    _require_manager(actor)
    if invitation.organization_id != actor.organization_id:
        raise TeamError("This invitation belongs to another organization.")
    _require_owner_for(actor, invitation.role, "revoke invitations of")
    Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).delete()


def invitation_check(*, invitation: Invitation | None, user) -> None:
    """Raise InvitationError unless `user` may accept `invitation` now (None: anyone could, once signed in)."""
    if invitation is None:
        raise InvitationError("unknown", "This invitation does not exist or was revoked.")
    if invitation.accepted_at is not None:
        raise InvitationError("used", "This invitation has already been used.")
    if invitation.is_expired():
        raise InvitationError("expired", "This invitation has expired. Ask for a new one.")
    if user is None:
        return
    if user.email.lower() != invitation.email.lower():
        raise InvitationError("wrong_email", f"This invitation was sent to {invitation.email}, but you are signed "
                                             f"in as {user.email}. Log out and sign in with the invited address.")
    if Membership.objects.filter(organization_id=invitation.organization_id, user=user).exists():
        raise InvitationError("member", f"You are already a member of {invitation.organization.name}.")


def invitation_accept(*, token: str, user) -> Membership:
    """Join the invitation's organization with its role; the invitation is used up."""
    with transaction.atomic():
        invitation = (Invitation.objects.select_for_update().select_related("organization")
                      .filter(token=token).first())
        invitation_check(invitation=invitation, user=user)
        try:
            with transaction.atomic():
                membership = Membership.objects.create(organization=invitation.organization, user=user,
                                                       role=invitation.role)
        except IntegrityError:  # joined through a concurrent request
            raise InvitationError("member", f"You are already a member of {invitation.organization.name}.")
        invitation.accepted_at = timezone.now()
        invitation.save(update_fields=["accepted_at"])
    return membership


@transaction.atomic
def member_role_change(*, actor: Membership, membership: Membership, role: str) -> None:
    _require_manager(actor)
    if role not in Role.values:
        raise TeamError("Choose owner, admin or member.")
    if membership.organization_id != actor.organization_id:
        raise TeamError("This member belongs to another organization.")
    if membership.role == role:
        return
    _require_owner_for(actor, role, "promote members to")
    _require_owner_for(actor, membership.role, "change the role of")
    if role != Role.OWNER:
        _keep_an_owner(membership, "be demoted")
    membership.role = role
    membership.save(update_fields=["role"])


@transaction.atomic
def member_remove(*, actor: Membership, membership: Membership) -> None:
    _require_manager(actor)
    if membership.organization_id != actor.organization_id:
        raise TeamError("This member belongs to another organization.")
    _require_owner_for(actor, membership.role, "remove")
    _keep_an_owner(membership, "be removed")
    membership.delete()


@transaction.atomic
def member_leave(*, membership: Membership) -> None:
    _keep_an_owner(membership, "leave the organization")
    membership.delete()
