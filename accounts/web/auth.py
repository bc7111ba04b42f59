"""Signing up, logging in (throttled) and out, and resetting a forgotten password by email."""
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.db import IntegrityError
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.web import throttle
from accounts.web.forms import LoginForm, SignupForm

TEMPLATES = "dashboard/auth/"


def safe_next(request) -> str:
    """The `next` page asked for, when it is on this site; empty otherwise."""
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if wanted and url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return wanted
    return ""


def signup(request):
    """A new account, signed in at once; then on to `next` (an invitation) or to create an organization."""
    if request.user.is_authenticated:
        return redirect(safe_next(request) or "home")
    initial = {"email": request.GET.get("email", "")}
    form = SignupForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            user = get_user_model().objects.create_user(form.cleaned_data["email"], form.cleaned_data["password1"])
        except IntegrityError:  # the same email signed up in a concurrent request
            form.add_error("email", "An account with this email already exists. Log in, or reset its password.")
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect(safe_next(request) or "organization-create")
    return render(request, TEMPLATES + "signup.html", {"form": form, "next": safe_next(request)})


class LoginView(auth_views.LoginView):
    template_name = TEMPLATES + "login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


class PasswordResetView(auth_views.PasswordResetView):
    """Asks for an email and answers the same whether or not an account has it."""

    template_name = TEMPLATES + "password_reset_form.html"
    email_template_name = TEMPLATES + "password_reset_email.txt"
    subject_template_name = TEMPLATES + "password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = TEMPLATES + "password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Sets the new password; the account's failed log-ins are forgotten with the old one."""

    template_name = TEMPLATES + "password_reset_confirm.html"
    success_url = reverse_lazy("password_reset_complete")

    def form_valid(self, form):
        response = super().form_valid(form)
        throttle.clear_email(form.user.email)
        return response


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = TEMPLATES + "password_reset_complete.html"
