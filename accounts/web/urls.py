from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.web import organizations

urlpatterns = [
    path("", organizations.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="dashboard/auth/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("organizations/new/", organizations.organization_create, name="organization-create"),
    path("organizations/switch/", organizations.organization_switch, name="organization-switch"),
]
