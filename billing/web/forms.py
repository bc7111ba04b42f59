"""The forms of the usage and billing pages.

Amounts are validated by the billing API's own fields and rules (billing.api), so a page and the REST API
accept and refuse exactly the same values; this module only words their errors for a person at a form.
"""
from datetime import date, timedelta

from django import forms
from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from accounts.models import Organization
from billing.api.control_views import billing_settings_update
from billing.api.serializers import TopupCreateSerializer
from billing.days import FIRST_DAY, LAST_DAY, MAX_DAYS, DayRangeError, day_range
from billing.models import BillingProfile
from billing.stripe.checkout import TopupAmountInvalid, topup_cents
from core.serializers import usd

QUICK_RANGES = {"7": "Last 7 days", "30": "Last 30 days", "90": "Last 90 days"}
DEFAULT_RANGE = "30"
NO_CARD = ("No card is saved yet. Make one top-up with the form above first; its card is kept for "
           "auto-recharge.")


# What the page says for each refusal of billing.days.day_range.
RANGE_WORDS = {
    "bounds": f"Choose a day from {FIRST_DAY} to {LAST_DAY}.",
    "order": "The last day must be on or after the first day.",
    "span": f"A range may span at most {MAX_DAYS} days.",
}


def _date_field(label: str) -> forms.DateField:
    bounds = {"min": FIRST_DAY.isoformat(), "max": LAST_DAY.isoformat()}
    return forms.DateField(label=label, required=False, input_formats=["%Y-%m-%d"],
                           widget=forms.DateInput(attrs={"type": "date", **bounds}, format="%Y-%m-%d"),
                           error_messages={"invalid": "Enter a date as YYYY-MM-DD."})


class UsageRangeForm(forms.Form):
    """The last 7, 30 or 90 UTC days (`range`), or custom days (`start` and `end`, both included)."""

    range = forms.ChoiceField(choices=list(QUICK_RANGES.items()), required=False,
                              error_messages={"invalid_choice": "Choose 7, 30 or 90 days, or custom dates."})
    start = _date_field("From")
    end = _date_field("To")

    @property
    def custom(self) -> bool:
        return bool(self.data.get("start") or self.data.get("end"))

    def clean(self):
        data = super().clean()
        if not self.custom:
            days = int(data.get("range") or DEFAULT_RANGE)
            today = timezone.now().date()
            return {**data, "range": str(days), "start": today - timedelta(days=days - 1), "end": today}
        start, end = data.get("start"), data.get("end")
        if start is None and "start" not in self.errors:
            self.add_error("start", "Choose the first day too.")
        if end is None and "end" not in self.errors:
            self.add_error("end", "Choose the last day too.")
        if start or end:
            try:
                day_range(start, end, today=timezone.now().date())
            except DayRangeError as refused:
                self.add_error(refused.field, RANGE_WORDS[refused.code])
        return {**data, "range": "custom"}

    def window(self) -> tuple[date, date, str]:
        """(first day, last day, range); the default range when the form has errors."""
        if self.is_valid():
            return self.cleaned_data["start"], self.cleaned_data["end"], self.cleaned_data["range"]
        today = timezone.now().date()
        return today - timedelta(days=int(DEFAULT_RANGE) - 1), today, DEFAULT_RANGE


def usd_message(detail) -> str:
    """An error of the billing API's USD fields, said to a person at a form."""
    if getattr(detail, "code", None) == "invalid" and str(detail).startswith("must be an amount"):
        return "Enter an amount in USD, such as 25.00."
    message = str(detail)
    return f"This amount {message}" if message.startswith("must") else message[:1].upper() + message[1:]


def _usd_input(label: str, help_text: str = "") -> forms.CharField:
    return forms.CharField(label=label, help_text=help_text, max_length=40, strip=True,
                           widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}))


def topup_bounds() -> str:
    return f"${settings.TOPUP_MIN_USD:,.2f} to ${settings.TOPUP_MAX_USD:,.2f}"


class TopupForm(forms.Form):
    amount_usd = _usd_input("Amount (USD)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["amount_usd"].help_text = (f"From {topup_bounds()}, in whole cents. You pay on Stripe's page; "
                                               "the credit appears once Stripe confirms the payment.")
        self.fields["amount_usd"].widget.attrs["placeholder"] = "25.00"

    def clean_amount_usd(self) -> int:
        """The amount in micro-USD, checked as the API checks a top-up."""
        body = TopupCreateSerializer(data={"amount_usd": self.cleaned_data["amount_usd"]})
        if not body.is_valid():
            detail = body.errors["amount_usd"][0]
            if detail.code == "range":
                raise forms.ValidationError(f"A top-up must be from {topup_bounds()}.")
            raise forms.ValidationError(usd_message(detail))
        amount = body.validated_data["amount_usd"]
        try:
            topup_cents(amount)
        except TopupAmountInvalid as exc:
            raise forms.ValidationError(usd_message(str(exc))) from exc
        return amount


# Where the billing API reports an error of each setting, and the form field that shows it.
SETTING_FIELDS = {
    ("auto_recharge", "enabled"): "auto_recharge_enabled",
    ("auto_recharge", "threshold_usd"): "auto_recharge_threshold_usd",
    ("auto_recharge", "amount_usd"): "auto_recharge_amount_usd",
    ("low_balance_threshold_usd",): "low_balance_threshold_usd",
}


def _flatten(detail, path=()):
    if isinstance(detail, dict):
        for name, inner in detail.items():
            yield from _flatten(inner, path + (name,))
    elif isinstance(detail, list):
        for inner in detail:
            yield from _flatten(inner, path)
    else:
        yield path, detail


class BillingSettingsForm(forms.Form):
    """Auto-recharge and the low-balance alert, saved through the billing API's validation and re-arming."""

    auto_recharge_enabled = forms.BooleanField(
        label="Auto-recharge", required=False,
        help_text="Charge the card saved by your last top-up whenever the available balance falls under the "
                  "threshold.")
    auto_recharge_threshold_usd = _usd_input("Recharge when the available balance falls under (USD)")
    auto_recharge_amount_usd = _usd_input("Recharge amount (USD)")
    low_balance_threshold_usd = _usd_input(
        "Low-balance alert under (USD)",
        "Email the owners and admins when the available balance falls under this; 0 for never.")

    def __init__(self, *args, read_only: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["auto_recharge_amount_usd"].help_text = f"From {topup_bounds()} while auto-recharge is on."
        for field in self.fields.values():
            field.disabled = read_only

    @staticmethod
    def initial_of(profile: BillingProfile) -> dict:
        return {
            "auto_recharge_enabled": profile.auto_recharge_enabled,
            "auto_recharge_threshold_usd": usd(profile.auto_recharge_threshold_micro),
            "auto_recharge_amount_usd": usd(profile.auto_recharge_amount_micro),
            "low_balance_threshold_usd": usd(profile.low_balance_threshold_micro),
        }

    def save(self, *, organization: Organization) -> BillingProfile | None:
        """The saved profile, or None with the refusals added to the form's fields."""
        data = self.cleaned_data
        body = {
            "auto_recharge": {"enabled": data["auto_recharge_enabled"],
                              "threshold_usd": data["auto_recharge_threshold_usd"],
                              "amount_usd": data["auto_recharge_amount_usd"]},
            "low_balance_threshold_usd": data["low_balance_threshold_usd"],
        }
        try:
            return billing_settings_update(organization=organization, data=body)
        except serializers.ValidationError as exc:
            for path, detail in _flatten(exc.detail):
                field = SETTING_FIELDS.get(path)
                message = NO_CARD if field == "auto_recharge_enabled" else usd_message(detail)
                self.add_error(field, message)
            return None
