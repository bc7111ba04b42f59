"""Forms of the account pages: sign-up, throttled log-in, inviting to the team and changing a role."""
import math

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from accounts.models import Membership
from accounts.web import throttle

Role = Membership.Role


class SignupForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email",
                                                                            "autofocus": True}))
    password1 = forms.CharField(label="Password", strip=False,
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
                                help_text=password_validation.password_validators_help_text_html())
    password2 = forms.CharField(label="Confirm password", strip=False,
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean_email(self):
        email = self.cleaned_data["email"].strip().lower()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise ValidationError("An account with this email already exists. Log in, or reset its password.",
                                  code="duplicate_email")
        return email

    def clean(self):
        cleaned = super().clean()
        password, confirmation = cleaned.get("password1"), cleaned.get("password2")
        if password and confirmation and password != confirmation:
            self.add_error("password2", "The two passwords do not match.")
        elif password:
            candidate = get_user_model()(email=cleaned.get("email") or "")
            try:
                password_validation.validate_password(password, user=candidate)
            except ValidationError as error:
                self.add_error("password1", error)
        return cleaned


def throttled_message(retry_at) -> str:
    minutes = max(1, math.ceil((retry_at.timestamp() - throttle.now()) / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return (f"Too many failed log-in attempts. Try again in {minutes} {unit} "
            f"(after {retry_at:%H:%M} UTC), or reset your password.")


class LoginForm(AuthenticationForm):
    """Django's log-in form, refusing every attempt while the email or the client IP is throttled."""

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

    def clean(self):
        email = self.cleaned_data.get("username") or str(self.data.get("username", ""))
        ip = throttle.client_ip(self.request) if self.request is not None else None
        retry_at = throttle.blocked_until(email, ip)
        if retry_at is not None:
            raise ValidationError(throttled_message(retry_at), code="throttled")
        try:
            cleaned = super().clean()
        except ValidationError as error:
            if error.code == "invalid_login":
                throttle.record_failure(email, ip)
            raise
        if self.user_cache is not None:
            throttle.clear_email(email)
        return cleaned


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
