"""The team page: members, invitations by email, roles, removing and leaving, and accepting an invitation."""
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Invitation, Membership
from accounts.services import organization_get_or_create

pytestmark = [pytest.mark.django_db, pytest.mark.money]

User = get_user_model()
Role = Membership.Role
PASSWORD = "plum-harbour-9-lantern"


def user(email, password=None):
    return User.objects.create_user(email, password)


def join(org, who, role):
    return Membership.objects.create(organization=org, user=who, role=role)


def as_user(who) -> Client:
    client = Client()
    client.force_login(who)
    return client


@pytest.fixture
def acme():
    """acme: owner olga, admin adam, member mia; and another organization, globex, owned by gus."""
    olga, adam, mia, gus = (user(e) for e in ("olga@acme.test", "adam@acme.test", "mia@acme.test", "gus@globex.test"))
    org, _ = organization_get_or_create(name="acme", owner=olga)
    other, _ = organization_get_or_create(name="globex", owner=gus)
    team = SimpleNamespace(org=org, other=other, olga=olga, adam=adam, mia=mia, gus=gus)
    team.adam_m = join(org, adam, Role.ADMIN)
    team.mia_m = join(org, mia, Role.MEMBER)
    team.olga_m = Membership.objects.get(organization=org, user=olga)
    team.gus_m = Membership.objects.get(organization=other, user=gus)
    return team


def invite(client, email, role="member"):
    return client.post(reverse("team-invite"), {"email": email, "role": role})


def role_of(org, who):
    membership = Membership.objects.filter(organization=org, user=who).first()
    return membership.role if membership else None


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_the_team_page_lists_members_and_pending_invitations(acme):
    Invitation.objects.create(organization=acme.org, email="new@acme.test", role=Role.ADMIN, invited_by=acme.olga)
    Invitation.objects.create(organization=acme.org, email="late@acme.test", invited_by=acme.olga,
                              expires_at=timezone.now() - timedelta(minutes=1))
    Invitation.objects.create(organization=acme.other, email="elsewhere@globex.test", invited_by=acme.gus)
    page = as_user(acme.olga).get(reverse("team"))
    assert page.status_code == 200
    html = page.content.decode()
    rows = re.findall(r'data-testid="member-row" data-email="([^"]+)"', html)
    assert rows == ["olga@acme.test", "adam@acme.test", "mia@acme.test"]
    assert timezone.now().strftime("%Y-%m-%d") in html
    assert re.findall(r'data-testid="invitation-row" data-email="([^"]+)"', html) == ["new@acme.test"]
    assert "gus@globex.test" not in html and "elsewhere@globex.test" not in html
    assert 'id="invite-form"' in html and 'data-testid="member-remove"' in html


def test_members_see_the_team_without_manager_controls(acme):
    Invitation.objects.create(organization=acme.org, email="new@acme.test", invited_by=acme.olga)
    html = as_user(acme.mia).get(reverse("team")).content.decode()
    assert "adam@acme.test" in html and "new@acme.test" in html
    for control in ('id="invite-form"', 'data-testid="member-remove"', 'data-testid="invitation-revoke"',
                    'data-testid="member-role-form"'):
        assert control not in html
    assert 'id="leave-button"' in html


def test_a_manager_invites_by_email_and_the_email_carries_the_accept_link(acme):
    response = invite(as_user(acme.adam), " New.Person@Example.com ", "admin")
    assert response.status_code == 302 and response["Location"] == reverse("team")
    invitation = Invitation.objects.get()
    assert (invitation.organization, invitation.email, invitation.role, invitation.invited_by) == (
        acme.org, "new.person@example.com", Role.ADMIN, acme.adam)
    assert invitation.accepted_at is None and len(invitation.token) >= 40
    assert timedelta(days=6, hours=23) < invitation.expires_at - timezone.now() <= timedelta(days=7)
    [email] = mail.outbox
    assert email.to == ["new.person@example.com"] and "acme" in email.subject
    assert f"{settings.SITE_URL}/invitations/{invitation.token}/" in email.body  # SITE_URL, not the Host
    assert b"new.person@example.com" in as_user(acme.adam).get(reverse("team")).content


@pytest.mark.parametrize("who, email, role, error", [
    ("olga", "not-an-email", "member", "Enter a valid email address"),
    ("olga", "", "member", "This field is required"),
    ("olga", "x@acme.test", "boss", "Select a valid choice"),
    ("adam", "x@acme.test", "owner", "Select a valid choice"),
    ("olga", "MIA@acme.test", "member", "mia@acme.test is already a member of acme"),
    ("olga", "pending@acme.test", "member", "already has a pending invitation"),
])
def test_bad_invitations_are_form_errors(acme, who, email, role, error):
    Invitation.objects.create(organization=acme.org, email="pending@acme.test", invited_by=acme.olga)
    response = invite(as_user(getattr(acme, who)), email, role)
    assert response.status_code == 400 and error.encode() in response.content
    assert Invitation.objects.count() == 1 and mail.outbox == []


def test_only_owners_invite_owners(acme):
    assert b'value="owner"' not in as_user(acme.adam).get(reverse("team")).content
    assert invite(as_user(acme.olga), "co-owner@acme.test", "owner").status_code == 302
    assert Invitation.objects.get().role == Role.OWNER


def test_manager_actions_by_a_member_are_403_and_change_nothing(acme):
    invitation = Invitation.objects.create(organization=acme.org, email="new@acme.test", invited_by=acme.olga)
    mia = as_user(acme.mia)
    for url, data in [
        (reverse("team-invite"), {"email": "x@acme.test", "role": "member"}),
        (reverse("invitation-revoke", args=[invitation.pk]), {}),
        (reverse("member-role", args=[acme.adam_m.pk]), {"role": "member"}),
        (reverse("member-remove", args=[acme.adam_m.pk]), {}),
    ]:
        response = mia.post(url, data)
        assert response.status_code == 403 and b"owners and admins can do this" in response.content
    assert Invitation.objects.filter(pk=invitation.pk).exists() and Invitation.objects.count() == 1
    assert role_of(acme.org, acme.adam) == Role.ADMIN


def test_another_organizations_invitations_and_members_are_404(acme):
    theirs = Invitation.objects.create(organization=acme.other, email="x@globex.test", invited_by=acme.gus)
    olga = as_user(acme.olga)
    assert olga.post(reverse("invitation-revoke", args=[theirs.pk])).status_code == 404
    assert olga.post(reverse("member-role", args=[acme.gus_m.pk]), {"role": "member"}).status_code == 404
    assert olga.post(reverse("member-remove", args=[acme.gus_m.pk])).status_code == 404
    assert Invitation.objects.filter(pk=theirs.pk).exists() and role_of(acme.other, acme.gus) == Role.OWNER


def test_revoking_an_invitation_kills_its_link(acme):
    invitation = Invitation.objects.create(organization=acme.org, email="new@acme.test", invited_by=acme.olga)
    response = as_user(acme.adam).post(reverse("invitation-revoke", args=[invitation.pk]), follow=True)
    assert "The invitation to new@acme.test was revoked." in messages_of(response)
    assert not Invitation.objects.exists()
    newcomer = as_user(user("new@acme.test"))
    page = newcomer.get(reverse("invitation-accept", args=[invitation.token]))
    assert page.status_code == 404 and b"does not exist or was revoked" in page.content


def test_managers_change_roles_within_their_rights(acme):
    olga, adam = as_user(acme.olga), as_user(acme.adam)
    response = adam.post(reverse("member-role", args=[acme.mia_m.pk]), {"role": "admin"}, follow=True)
    assert "mia@acme.test is now Admin." in messages_of(response) and role_of(acme.org, acme.mia) == Role.ADMIN
    response = adam.post(reverse("member-role", args=[acme.mia_m.pk]), {"role": "owner"}, follow=True)
    assert "Only owners can promote members to owners." in messages_of(response)
    response = adam.post(reverse("member-role", args=[acme.olga_m.pk]), {"role": "member"}, follow=True)
    assert "Only owners can change the role of owners." in messages_of(response)
    response = adam.post(reverse("member-remove", args=[acme.olga_m.pk]), follow=True)
    assert "Only owners can remove owners." in messages_of(response)
    response = olga.post(reverse("member-role", args=[acme.mia_m.pk]), {"role": "chief"}, follow=True)
    assert "Choose owner, admin or member." in messages_of(response)
    assert (role_of(acme.org, acme.olga), role_of(acme.org, acme.mia)) == (Role.OWNER, Role.ADMIN)
    olga.post(reverse("member-role", args=[acme.mia_m.pk]), {"role": "owner"})
    assert role_of(acme.org, acme.mia) == Role.OWNER


def test_the_last_owner_cannot_leave_be_removed_or_demoted(acme):
    olga = as_user(acme.olga)
    for url, data, action in [
        (reverse("team-leave"), {}, "leave the organization"),
        (reverse("member-remove", args=[acme.olga_m.pk]), {}, "be removed"),
        (reverse("member-role", args=[acme.olga_m.pk]), {"role": "admin"}, "be demoted"),
    ]:
        response = olga.post(url, data, follow=True)
        assert f"The last owner cannot {action}. Make another member an owner first." in messages_of(response)
        assert role_of(acme.org, acme.olga) == Role.OWNER
    olga.post(reverse("member-role", args=[acme.adam_m.pk]), {"role": "owner"})
    assert olga.post(reverse("member-role", args=[acme.olga_m.pk]), {"role": "member"}).status_code == 302
    assert role_of(acme.org, acme.olga) == Role.MEMBER
    adam = as_user(acme.adam)
    response = adam.post(reverse("team-leave"), follow=True)
    assert "The last owner cannot leave the organization." in " ".join(messages_of(response))


def test_a_manager_removes_a_member(acme):
    response = as_user(acme.adam).post(reverse("member-remove", args=[acme.mia_m.pk]), follow=True)
    assert "mia@acme.test was removed from acme." in messages_of(response)
    assert role_of(acme.org, acme.mia) is None
    assert as_user(acme.mia).get(reverse("team")).status_code == 302  # no organization left: create one


def test_any_member_can_leave(acme):
    mia = as_user(acme.mia)
    response = mia.post(reverse("team-leave"))
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert role_of(acme.org, acme.mia) is None and role_of(acme.org, acme.olga) == Role.OWNER


def test_team_forms_need_the_csrf_token(acme):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(acme.olga)
    assert strict.post(reverse("team-invite"), {"email": "x@acme.test", "role": "member"}).status_code == 403
    assert strict.post(reverse("member-remove", args=[acme.mia_m.pk])).status_code == 403
    assert not Invitation.objects.exists() and role_of(acme.org, acme.mia) == Role.MEMBER


def test_a_signed_in_invitee_accepts_and_the_organization_becomes_current(acme):
    invitation = Invitation.objects.create(organization=acme.org, email="gus@globex.test", role=Role.ADMIN,
                                           invited_by=acme.olga)
    gus = as_user(acme.gus)
    url = reverse("invitation-accept", args=[invitation.token])
    page = gus.get(url)
    assert page.status_code == 200 and b'id="invitation-accept"' in page.content and b"Join acme" in page.content
    assert role_of(acme.org, acme.gus) is None  # looking is not joining
    response = gus.post(url)
    assert response.status_code == 302 and role_of(acme.org, acme.gus) == Role.ADMIN
    assert gus.session["organization_id"] == acme.org.pk
    assert b"Team of acme" in gus.get(reverse("team")).content
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None
    again = gus.post(url)
    assert again.status_code == 410 and b"already been used" in again.content


def test_an_invitee_without_an_account_signs_up_and_is_brought_back(acme, client):
    invitation = Invitation.objects.create(organization=acme.org, email="newbie@example.com", invited_by=acme.olga)
    url = reverse("invitation-accept", args=[invitation.token])
    page = client.get(url).content.decode()
    assert 'id="invitation-login"' in page and 'id="invitation-signup"' in page
    signup_url = re.search(r'id="invitation-signup"\s+href="([^"]+)"', page).group(1).replace("&amp;", "&")
    form = client.get(signup_url)
    assert form.context["form"]["email"].value() == "newbie@example.com"
    assert client.post(signup_url, {"email": "newbie@example.com"}).status_code == 302
    confirm = re.search(r"https?://[^/\s]+(/accounts/signup/\S+/)", mail.outbox[-1].body).group(1)
    signed_up = client.post(confirm, {"password1": PASSWORD, "password2": PASSWORD})
    assert signed_up.status_code == 302 and signed_up["Location"] == url
    assert client.post(url).status_code == 302
    assert role_of(acme.org, User.objects.get(email="newbie@example.com")) == Role.MEMBER


def test_an_invitee_with_an_account_logs_in_and_is_brought_back(acme, client):
    invitee = user("returning@example.com", PASSWORD)
    invitation = Invitation.objects.create(organization=acme.org, email="Returning@Example.com", invited_by=acme.olga)
    url = reverse("invitation-accept", args=[invitation.token])
    assert client.post(url)["Location"] == f"{reverse('login')}?next={url}"
    page = client.get(url).content.decode()
    login_url = re.search(r'id="invitation-login" href="([^"]+)"', page).group(1)
    assert login_url == f"{reverse('login')}?next={url}"
    logged_in = client.post(login_url, {"username": "returning@example.com", "password": PASSWORD, "next": url})
    assert logged_in.status_code == 302 and logged_in["Location"] == url
    assert client.post(url).status_code == 302 and role_of(acme.org, invitee) == Role.MEMBER


@pytest.mark.parametrize("case, status, text", [
    ("wrong_email", 403, b"This invitation was sent to new@acme.test, but you are signed in as gus@globex.test"),
    ("expired", 410, b"This invitation has expired"),
    ("used", 410, b"This invitation has already been used"),
    ("unknown", 404, b"This invitation does not exist or was revoked"),
])
def test_unusable_invitations_show_a_clear_page_and_join_nothing(acme, case, status, text):
    invitation = Invitation.objects.create(organization=acme.org, email="new@acme.test", invited_by=acme.olga)
    invitee = acme.gus if case == "wrong_email" else user("new@acme.test")
    token = "no-such-token" if case == "unknown" else invitation.token
    if case == "expired":
        Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    if case == "used":
        Invitation.objects.filter(pk=invitation.pk).update(accepted_at=timezone.now())
    client = as_user(invitee)
    url = reverse("invitation-accept", args=[token])
    for response in (client.get(url), client.post(url)):
        assert response.status_code == status and text in response.content
        assert b'id="invitation-error"' in response.content and b'id="invitation-accept"' not in response.content
    assert role_of(acme.org, invitee) is None
    if case in ("expired", "unknown"):  # visitors who are not signed in get the same answer
        anonymous = Client().get(url)
        assert anonymous.status_code == status and text in anonymous.content
