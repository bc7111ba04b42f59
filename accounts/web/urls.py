from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.web import auth, invitations, keys, organizations, sessions, signup, team

urlpatterns = [
    path("", organizations.home, name="home"),
    path("accounts/login/", auth.login_view, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("organizations/new/", organizations.organization_create, name="organization-create"),
    path("organizations/switch/", organizations.organization_switch, name="organization-switch"),
    path("keys/", keys.key_list, name="keys"),
    path("keys/new/", keys.key_create, name="key-create"),
    path("keys/<int:key_id>/revoke/", keys.key_revoke, name="key-revoke"),
    path("keys/<int:key_id>/limits/", keys.key_limits_edit, name="key-limits"),
    path("sessions/", sessions.session_list, name="sessions"),
    path("sessions/<str:session_id>/", sessions.session_detail, name="session-detail"),
    path("sessions/<str:session_id>/rename/", sessions.session_rename, name="session-rename"),
    path("sessions/<str:session_id>/delete/", sessions.session_delete, name="session-delete"),
    path("accounts/signup/", signup.signup, name="signup"),
    path("accounts/signup/sent/", signup.signup_sent, name="signup-sent"),
    path("accounts/signup/<str:token>/", signup.signup_confirm, name="signup-confirm"),
    path("accounts/password-reset/", auth.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/password-reset/sent/", auth.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("accounts/reset/<uidb64>/<token>/", auth.password_reset_confirm_view, name="password_reset_confirm"),
    path("accounts/reset/done/", auth.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("team/", team.team, name="team"),
    path("team/invite/", team.invite, name="team-invite"),
    path("team/invitations/<int:pk>/revoke/", team.invitation_revoke_view, name="invitation-revoke"),
    path("team/members/<int:pk>/role/", team.member_role, name="member-role"),
    path("team/members/<int:pk>/remove/", team.member_remove_view, name="member-remove"),
    path("team/leave/", team.leave, name="team-leave"),
    path("invitations/<str:token>/", invitations.invitation_accept_view, name="invitation-accept"),
]
