"""Logging in (throttled) and out, and resetting a forgotten password by email (signing up: accounts.web.signup)."""
import functools
import math

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.hashers import HashingBusy
from accounts.web import throttle
from accounts.web.forms import LoginForm
from accounts.web.links import site_domain

TEMPLATES = "dashboard/auth/"


def throttled(view):
    """A view that checks or sets passwords: 429 with Retry-After when its log-in form was refused by the
    throttle, or when every password-hashing slot of the process stayed busy."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            response = view(request, *args, **kwargs)
        except HashingBusy:
            wait = max(1, math.ceil(settings.PASSWORD_HASH_WAIT))
            response = render(request, "error.html", {
                "title": "Busy", "detail": "The server is checking many passwords right now. "
                                           f"Try again in {wait} seconds."}, status=429)
            response["Retry-After"] = str(wait)
            return response
        form = (getattr(response, "context_data", None) or {}).get("form")
        retry_at = getattr(form, "retry_at", None)
        if retry_at is not None:
            response.status_code = 429
            response["Retry-After"] = str(max(1, math.ceil(retry_at - throttle.now())))
        return response

    return wrapper


def safe_next(request) -> str:
    """The `next` page asked for, when it is on this site; empty otherwise."""
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if wanted and url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return wanted
    return ""


class LoginView(auth_views.LoginView):
    template_name = TEMPLATES + "login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


login_view = throttled(LoginView.as_view())


class PasswordResetView(auth_views.PasswordResetView):
    """Asks for an email and answers the same whether or not an account has it."""

    template_name = TEMPLATES + "password_reset_form.html"
    email_template_name = TEMPLATES + "password_reset_email.txt"
    subject_template_name = TEMPLATES + "password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")

    def form_valid(self, form):
        # The link and the site's name come from SITE_URL: the Host header is the requester's to choose.
        form.save(domain_override=site_domain(), use_https=settings.SITE_URL.startswith("https:"),
                  request=self.request, token_generator=self.token_generator, from_email=self.from_email,
                  email_template_name=self.email_template_name, subject_template_name=self.subject_template_name)
        return HttpResponseRedirect(self.get_success_url())


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


password_reset_confirm_view = throttled(PasswordResetConfirmView.as_view())


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = TEMPLATES + "password_reset_complete.html"
