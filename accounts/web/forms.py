"""Forms of the account pages: sign-up (email, then password), throttled log-in, inviting, changing a role."""
import math
from datetime import datetime, timezone

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from accounts.models import Membership
from accounts.web import throttle

Role = Membership.Role


class SignupForm(forms.Form):
    """The first step of signing up: an email, to which the link that finishes it is sent (accounts.web.signup)."""

    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email",
                                                                            "autofocus": True}))

    def clean_email(self):
        return self.cleaned_data["email"].strip().lower()


class SignupPasswordForm(forms.Form):
    """The last step: the password of the account made for `email`, whose link was followed."""

    password1 = forms.CharField(label="Password", strip=False,
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password",
                                                                  "autofocus": True}),
                                help_text=password_validation.password_validators_help_text_html())
    password2 = forms.CharField(label="Confirm password", strip=False,
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def __init__(self, *args, email: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self):
        cleaned = super().clean()
        password, confirmation = cleaned.get("password1"), cleaned.get("password2")
        if password and confirmation and password != confirmation:
            self.add_error("password2", "The two passwords do not match.")
        elif password:
            try:
                password_validation.validate_password(password, user=get_user_model()(email=self.email))
            except ValidationError as error:
                self.add_error("password1", error)
        return cleaned


def throttled_message(retry_at: float) -> str:
    minutes = max(1, math.ceil((retry_at - throttle.now()) / 60))
    unit = "minute" if minutes == 1 else "minutes"
    at = datetime.fromtimestamp(retry_at, tz=timezone.utc)
    return (f"Too many failed log-in attempts. Try again in {minutes} {unit} "
            f"(after {at:%H:%M} UTC), or reset your password.")


class ThrottledLogin:
    """Counts a log-in attempt before its password is checked (accounts.web.throttle); a refused one sets
    `retry_at` and is a form error, and reaches no password hasher."""

    retry_at: float | None = None

    def clean(self):
        email, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if not (email and password):  # Django checks no password then: nothing to count
            return super().clean()
        address = throttle.client_ip(self.request) if self.request is not None else None
        attempt = throttle.admit(email, address)
        if attempt.refused:
            self.retry_at = attempt.retry_at
            raise ValidationError(throttled_message(attempt.retry_at), code="throttled")
        try:
            cleaned = super().clean()
        except ValidationError as error:
            if error.code == "invalid_login":
                attempt.failed()
            else:
                attempt.cancelled()
            raise
        except BaseException:  # not evaluated (every hashing slot busy): the attempt does not count
            attempt.cancelled()
            raise
        attempt.succeeded()
        return cleaned


class LoginForm(ThrottledLogin, AuthenticationForm):
    """Django's log-in form, throttled per email and client address."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "The email and password do not match an account. Passwords are case-sensitive.",
    }

    def __init__(self, request=None, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        self.fields["username"].label = "Email"
        self.fields["username"].widget = forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True})

    def clean_username(self):
        return self.cleaned_data["username"].strip().lower()


class AdminLoginForm(ThrottledLogin, AdminAuthenticationForm):
    """The admin's log-in form, under the same throttle as the dashboard's."""


def role_choices(actor: Membership) -> list[tuple[str, str]]:
    """The roles `actor` may give: owners give any, admins give admin and member."""
    roles = [Role.MEMBER, Role.ADMIN] + ([Role.OWNER] if actor.role == Role.OWNER else [])
    return [(role.value, role.label) for role in roles]


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "off",
                                                                            "id": "invite-email"}))
    role = forms.ChoiceField(choices=[], widget=forms.Select(attrs={"id": "invite-role"}))

    def __init__(self, *args, actor: Membership, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = role_choices(actor)

    def clean_email(self):
        return self.cleaned_data["email"].strip().lower()


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
