from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.web import keys, organizations, sessions

urlpatterns = [
    path("", organizations.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="dashboard/auth/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("organizations/new/", organizations.organization_create, name="organization-create"),
    path("organizations/switch/", organizations.organization_switch, name="organization-switch"),
    path("keys/", keys.key_list, name="keys"),
    path("keys/new/", keys.key_create, name="key-create"),
    path("keys/<int:key_id>/revoke/", keys.key_revoke, name="key-revoke"),
    path("sessions/", sessions.session_list, name="sessions"),
    path("sessions/<str:session_id>/", sessions.session_detail, name="session-detail"),
    path("sessions/<str:session_id>/rename/", sessions.session_rename, name="session-rename"),
    path("sessions/<str:session_id>/delete/", sessions.session_delete, name="session-delete"),
]
