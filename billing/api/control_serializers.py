"""Wire shapes of what owners and admins control: rate limits, a key's limits, auto-recharge and alerts."""
from django.conf import settings
from rest_framework import serializers

from accounts.models import RPM_MAX, TPM_MAX, SpendWindow
from billing.models import MICRO_USD
from core.catalogue import all_models
from core.serializers import JSONBooleanField, StrictSerializer, USDField, WholeNumberField, usd

MAX_ALLOWED_MODELS = 100


def _per_minute(maximum: int, what: str) -> WholeNumberField:
    return WholeNumberField(min_value=1, max_value=maximum, allow_null=True, required=False,
                            help_text=f"{what} per minute; null for no limit of its own.")


class OrganizationLimitsSerializer(StrictSerializer):
    """The organization's rate limits, across all its keys (each key's own limits apply on top)."""

    rate_limit_rpm = _per_minute(RPM_MAX, "Requests, across all the organization's keys,")
    rate_limit_tpm = _per_minute(TPM_MAX, "Tokens, across all the organization's keys,")
    effective_rate_limit_rpm = serializers.SerializerMethodField(
        help_text="What applies: rate_limit_rpm, or the operator's default when it is null.")
    effective_rate_limit_tpm = serializers.SerializerMethodField(
        help_text="What applies: rate_limit_tpm, or the operator's default when it is null.")

    def get_effective_rate_limit_rpm(self, organization) -> int:
        return organization.rate_limit_rpm or settings.ORG_RATE_LIMIT_RPM

    def get_effective_rate_limit_tpm(self, organization) -> int:
        return organization.rate_limit_tpm or settings.ORG_RATE_LIMIT_TPM


class KeyLimitsSerializer(StrictSerializer):
    """What one API key may use: its rate limits, a spending cap and the models it may call."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    prefix = serializers.CharField(read_only=True, help_text="The key's visible start, `sk-` and 8 characters.")
    rate_limit_rpm = _per_minute(RPM_MAX, "Requests with this key")
    rate_limit_tpm = _per_minute(TPM_MAX, "Tokens with this key")
    spend_cap_usd = USDField(source="spend_cap_micro", minimum_micro=1, allow_null=True, required=False,
                             help_text="Most the key may spend per window, in USD; null for no cap.")
    spend_cap_window = serializers.ChoiceField(choices=SpendWindow.choices, required=False,
                                               help_text="The calendar window of the cap (UTC day, ISO week, month).")
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=200), max_length=MAX_ALLOWED_MODELS, required=False,
        help_text="Model ids the key may use; empty for every model.")

    def validate_allowed_models(self, value):
        known = all_models()
        for model_id in value:
            if model_id not in known:
                raise serializers.ValidationError(
                    f"unknown model id '{model_id}'; known models: {', '.join(sorted(known))}.")
        return list(dict.fromkeys(value))


class AutoRechargeSerializer(StrictSerializer):
    """Top up from the saved card whenever the available balance falls under a threshold."""

    enabled = JSONBooleanField(source="auto_recharge_enabled", required=False,
                               help_text="Charge the saved card when the available balance falls under the threshold.")
    threshold_usd = USDField(source="auto_recharge_threshold_micro", required=False,
                             help_text="Recharge when the available balance falls under this.")
    amount_usd = USDField(source="auto_recharge_amount_micro", places=2, required=False,
                          help_text="What each recharge adds, within the top-up bounds.")
    card_saved = serializers.SerializerMethodField(
        help_text="Whether a card was saved by a Checkout top-up; auto-recharge charges it.")

    def get_card_saved(self, profile) -> bool:
        return bool(profile.stripe_payment_method_id)


AUTO_RECHARGE_FIELDS = {"auto_recharge_enabled", "auto_recharge_threshold_micro", "auto_recharge_amount_micro"}


def _failure(field: str, message: str) -> serializers.ValidationError:
    return serializers.ValidationError({"auto_recharge": {field: [message]}})


class BillingSettingsSerializer(StrictSerializer):
    """Auto-recharge and the low-balance alert of the organization."""

    auto_recharge = AutoRechargeSerializer(source="*", required=False)
    low_balance_threshold_usd = USDField(source="low_balance_threshold_micro", required=False,
                                         help_text="Email the owners and admins when the available balance falls "
                                                   "under this; 0 for never.")
    topup_min_usd = serializers.SerializerMethodField(help_text="The smallest top-up or recharge.")
    topup_max_usd = serializers.SerializerMethodField(help_text="The largest top-up or recharge.")

    def get_topup_min_usd(self, profile) -> str:
        return usd(settings.TOPUP_MIN_USD * MICRO_USD)

    def get_topup_max_usd(self, profile) -> str:
        return usd(settings.TOPUP_MAX_USD * MICRO_USD)

    def validate(self, attrs):
        """The changes, checked against the profile they apply to (`context["profile"]`): the result must work."""
        profile = self.context["profile"]
        if attrs.get("auto_recharge_enabled") and not profile.stripe_payment_method_id:
            raise _failure("enabled", "no card is saved yet. Make one top-up through Checkout first "
                                      "(POST /api/billing/topups); its card is kept for auto-recharge.")
        touched = AUTO_RECHARGE_FIELDS & attrs.keys()
        enabled = attrs.get("auto_recharge_enabled", profile.auto_recharge_enabled)
        if touched and enabled:
            threshold = attrs.get("auto_recharge_threshold_micro", profile.auto_recharge_threshold_micro)
            amount = attrs.get("auto_recharge_amount_micro", profile.auto_recharge_amount_micro)
            low, high = settings.TOPUP_MIN_USD * MICRO_USD, settings.TOPUP_MAX_USD * MICRO_USD
            if threshold <= 0:
                raise _failure("threshold_usd", "must be above 0 while auto-recharge is enabled.")
            if not low <= amount <= high:
                raise _failure("amount_usd", f"must be between {usd(low)} and {usd(high)} USD while auto-recharge "
                                             "is enabled.")
        return attrs
