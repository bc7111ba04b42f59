"""Signing up with a verified email: the address gets a link, and following it is what makes the account.

The sign-up form answers the same whether or not the address has an account, so it tells nobody who has one:
a new address is sent the link that finishes signing up, an address with an account is told so (with links to
log in and to reset the password). Nothing is stored until the link is followed: it carries the address,
signed and dated, and its page asks for the password. Whoever chose the password therefore reads that inbox.
"""
from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.core import signing
from django.core.mail import send_mail
from django.db import IntegrityError
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_safe

from accounts.web.auth import TEMPLATES, safe_next, throttled
from accounts.web.forms import SignupForm, SignupPasswordForm
from accounts.web.links import site_domain, site_link

SALT = "accounts.signup"


def _on_this_site(next_url: str) -> str:
    """`next_url` when it is a path on this site (no host of its own); empty otherwise."""
    return next_url if url_has_allowed_host_and_scheme(next_url, allowed_hosts=None) else ""


def signup_token(email: str, next_url: str = "") -> str:
    return signing.dumps({"email": email, "next": next_url}, salt=SALT, compress=True)


def signup_token_read(token: str) -> dict | None:
    """{"email", "next"} of a link that is genuine and younger than PASSWORD_RESET_TIMEOUT; None otherwise."""
    try:
        return signing.loads(token, salt=SALT, max_age=settings.PASSWORD_RESET_TIMEOUT)
    except signing.BadSignature:  # forged, altered or expired (SignatureExpired is one)
        return None


def _send(email: str, template: str, subject: str, context: dict) -> None:
    context = {"site": site_domain(), "days": max(1, settings.PASSWORD_RESET_TIMEOUT // 86400), **context}
    send_mail(subject, render_to_string(TEMPLATES + template, context), settings.DEFAULT_FROM_EMAIL, [email])


def signup_email_send(*, email: str, next_url: str) -> None:
    """Mails `email` the link that finishes signing up, or, when it has an account, the way to log in."""
    if get_user_model().objects.filter(email__iexact=email).exists():
        _send(email, "signup_existing_email.txt", f"Your account on {site_domain()}", {
            "login_link": site_link("login", next=next_url), "reset_link": site_link("password_reset")})
    else:
        _send(email, "signup_email.txt", f"Finish signing up on {site_domain()}", {
            "link": site_link("signup-confirm", signup_token(email, next_url))})


@require_http_methods(["GET", "POST"])
def signup(request):
    """Asks for an email and answers the same whether or not it has an account."""
    if request.user.is_authenticated:
        return redirect(safe_next(request) or "home")
    form = SignupForm(request.POST or None, initial={"email": request.GET.get("email", "")})
    if request.method == "POST" and form.is_valid():
        signup_email_send(email=form.cleaned_data["email"], next_url=_on_this_site(safe_next(request)))
        return redirect("signup-sent")
    return render(request, TEMPLATES + "signup.html", {"form": form, "next": safe_next(request)},
                  status=400 if form.errors else 200)


@require_safe
def signup_sent(request):
    return render(request, TEMPLATES + "signup_sent.html")


@never_cache
@throttled
@require_http_methods(["GET", "POST"])
def signup_confirm(request, token: str):
    """The emailed link: choose a password, and the account is made, signed in and sent on to `next`."""
    pending = signup_token_read(token)
    if pending is None:
        return render(request, TEMPLATES + "signup_confirm.html", {"invalid": True}, status=400)
    email, next_url = pending["email"], _on_this_site(pending["next"])
    used = {"used": True, "email": email, "next": next_url}
    if get_user_model().objects.filter(email__iexact=email).exists():
        return render(request, TEMPLATES + "signup_confirm.html", used, status=409)
    form = SignupPasswordForm(request.POST or None, email=email)
    if request.method == "POST" and form.is_valid():
        try:
            user = get_user_model().objects.create_user(email, form.cleaned_data["password1"])
        except IntegrityError:  # the link was followed twice at once
            return render(request, TEMPLATES + "signup_confirm.html", used, status=409)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(next_url or "organization-create")
    return render(request, TEMPLATES + "signup_confirm.html", {"form": form, "email": email},
                  status=400 if form.errors else 200)
