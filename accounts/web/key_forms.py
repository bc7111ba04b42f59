"""The forms that create an API key (name, expiry, allowed models, limits) and change its limits.

Limits follow the tenants' REST API (`/api/billing/keys/{id}/limits`): the same bounds for requests and
tokens per minute and the same exact USD parsing of the spend cap, so a key made here could be made there.
"""
from django import forms
from django.utils import timezone
from rest_framework.exceptions import ValidationError as APIValidationError

from accounts.models import RPM_MAX, TPM_MAX, APIKey, SpendWindow
from core.catalogue import all_models
from core.serializers import USDField, usd

DATETIME_LOCAL = "%Y-%m-%dT%H:%M"


class KeyCreateForm(forms.Form):
    name = forms.CharField(
        max_length=APIKey._meta.get_field("name").max_length, error_messages={"required": "Give the key a name."},
        help_text="For you and your team: where the key is used, e.g. “production backend”.")
    expires_at = forms.DateTimeField(
        required=False, label="Expires (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_LOCAL),
        help_text="Leave empty for a key that does not expire.")
    allowed_models = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Allowed models",
        help_text="Tick none to allow every model, also those added later.")
    spend_cap_usd = forms.CharField(
        required=False, max_length=40, label="Spend cap (USD)",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "placeholder": "e.g. 25.00"}),
        help_text="Most the key may spend per window, exact to 0.000001 USD. Empty: no cap.")
    spend_cap_window = forms.ChoiceField(
        choices=SpendWindow.choices, initial=SpendWindow.MONTH, label="Spend cap window",
        help_text="A UTC day, an ISO week starting Monday, or a calendar month.")
    rate_limit_rpm = forms.IntegerField(
        required=False, min_value=1, max_value=RPM_MAX, label="Requests per minute",
        help_text="Empty: no limit of the key's own (the organization's limit still applies).")
    rate_limit_tpm = forms.IntegerField(
        required=False, min_value=1, max_value=TPM_MAX, label="Tokens per minute",
        help_text="Prompt plus completion tokens. Empty: no limit of the key's own.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = [(model_id, model_id) for model_id in sorted(all_models())]

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires_at

    def clean_spend_cap_usd(self) -> int | None:
        """The cap in micro-USD (None for no cap), parsed exactly as the REST API parses it."""
        text = self.cleaned_data["spend_cap_usd"].strip()
        if not text:
            return None
        try:
            return USDField(minimum_micro=1).run_validation(text)
        except APIValidationError as exc:
            raise forms.ValidationError([f"The spend cap {message}" for message in exc.detail]) from None

    def limit_arguments(self) -> dict:
        """The key's allowed models and limits as the form sets them."""
        data = self.cleaned_data
        return {"allowed_models": data["allowed_models"], "spend_cap_micro": data["spend_cap_usd"],
                "spend_cap_window": data["spend_cap_window"], "rate_limit_rpm": data["rate_limit_rpm"],
                "rate_limit_tpm": data["rate_limit_tpm"]}

    def service_arguments(self) -> dict:
        """Keyword arguments for `accounts.services.api_key_create`."""
        return {"name": self.cleaned_data["name"], "expires_at": self.cleaned_data["expires_at"],
                **self.limit_arguments()}


class KeyLimitsForm(KeyCreateForm):
    """An existing key's allowed models and limits; its name, expiry and secret stay as they are."""

    def __init__(self, *args, key: APIKey, **kwargs):
        initial = {
            "allowed_models": key.allowed_models,
            "spend_cap_usd": "" if key.spend_cap_micro is None else usd(key.spend_cap_micro),
            "spend_cap_window": key.spend_cap_window,
            "rate_limit_rpm": key.rate_limit_rpm,
            "rate_limit_tpm": key.rate_limit_tpm,
        }
        super().__init__(*args, initial=initial, **kwargs)
        del self.fields["name"], self.fields["expires_at"]
        # Models the key is limited to that are no longer in the catalogue stay choosable, so saving the form
        # never widens the key to every model by dropping them.
        field = self.fields["allowed_models"]
        known = {model_id for model_id, _ in field.choices}
        field.choices = field.choices + [(model_id, f"{model_id} (not served now)")
                                         for model_id in key.allowed_models if model_id not in known]

    def service_arguments(self) -> dict:
        """The key's fields as this form sets them."""
        return self.limit_arguments()
