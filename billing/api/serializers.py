"""Wire shapes of /api/billing: the balance, the ledger, usage and top-ups."""
from django.conf import settings
from django.core.validators import URLValidator
from django.utils import timezone
from rest_framework import serializers

from accounts.api.serializers import UnixTimeField
from billing.api.usage import GROUPS
from billing.days import DEFAULT_DAYS, FIRST_DAY, LAST_DAY, MAX_DAYS, DayRangeError, day_range
from billing.models import MICRO_USD, LedgerEntry, Payment
from core.serializers import USD_STRING, StrictSerializer, USDField, USDReadField, cents_usd


class BalanceSerializer(serializers.Serializer):
    balance_micro = serializers.IntegerField(help_text="Credit on the account, in micro-USD (1 USD = 1000000).")
    held_micro = serializers.IntegerField(help_text="Reserved by requests in flight.")
    available_micro = serializers.IntegerField(help_text="What new requests can spend: balance less held.")
    balance_usd = USDReadField(source="balance_micro")
    held_usd = USDReadField(source="held_micro")
    available_usd = USDReadField(source="available_micro")
    currency = serializers.CharField()


def _email(user) -> str | None:
    return user.email if user is not None else None


class LedgerEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=LedgerEntry.Kind.choices)
    amount_micro = serializers.IntegerField(help_text="Signed: credits are positive, charges negative.")
    amount_usd = USDReadField(source="amount_micro")
    balance_after_micro = serializers.IntegerField(help_text="The balance once this entry was posted.")
    balance_after_usd = USDReadField(source="balance_after_micro")
    description = serializers.CharField()
    reference = serializers.CharField(help_text="What the entry answers to: a request id, a Stripe payment.")
    created_at = UnixTimeField()
    created_by = serializers.SerializerMethodField(help_text="Email of the user who posted it; null when automatic.")

    def get_created_by(self, entry) -> str | None:
        return _email(entry.created_by)


class LedgerQuerySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=LedgerEntry.Kind.choices, required=False,
                                   help_text="Only entries of this kind.")


class UsageQuerySerializer(serializers.Serializer):
    start = serializers.DateField(input_formats=["%Y-%m-%d"], required=False,
                                  help_text=f"First UTC day (YYYY-MM-DD); default {DEFAULT_DAYS - 1} days "
                                            f"before `end`. From {FIRST_DAY} to {LAST_DAY}, at most "
                                            f"{MAX_DAYS} days before `end`.")
    end = serializers.DateField(input_formats=["%Y-%m-%d"], required=False,
                                help_text=f"Last UTC day, included (YYYY-MM-DD); default today. From {FIRST_DAY} "
                                          f"to {LAST_DAY}.")
    group_by = serializers.ChoiceField(choices=list(GROUPS), default="day",
                                       help_text="day, model, key (API key) or day_model.")

    def validate(self, attrs):
        try:
            start, end = day_range(attrs.get("start"), attrs.get("end"), today=timezone.now().date())
        except DayRangeError as refused:
            raise serializers.ValidationError({refused.field: [str(refused)]}) from None
        return {**attrs, "start": start, "end": end}


class UsageFiguresSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField(help_text="Of prompt_tokens, those served from the prefix cache, "
                                                       "charged the model's cached input price.")
    completion_tokens = serializers.IntegerField()
    cost_micro = serializers.IntegerField(help_text="What was charged, in micro-USD.")
    cost_usd = serializers.CharField(help_text=USD_STRING["description"])


class UsageKeySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's visible start, `sk-` and 8 characters.")


class UsageRowSerializer(UsageFiguresSerializer):
    day = serializers.DateField(required=False, help_text="With group_by day or day_model.")
    model = serializers.CharField(required=False, help_text="With group_by model or day_model.")
    key = UsageKeySerializer(required=False, allow_null=True,
                             help_text="With group_by key; null for requests of a key since deleted.")


class UsageSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    group_by = serializers.ChoiceField(choices=list(GROUPS))
    data = UsageRowSerializer(many=True)
    total = UsageFiguresSerializer()


class TopupCreateSerializer(StrictSerializer):
    """A top-up to pay on Stripe's Checkout page."""

    amount_usd = USDField(places=2, minimum_micro=MICRO_USD // 100,
                          help_text="What to add, in USD (whole cents), within the operator's top-up bounds.")
    success_url = serializers.CharField(required=False, max_length=2000,
                                        validators=[URLValidator(schemes=["http", "https"])],
                                        help_text="Where Stripe sends the browser after paying.")
    cancel_url = serializers.CharField(required=False, max_length=2000,
                                       validators=[URLValidator(schemes=["http", "https"])],
                                       help_text="Where Stripe sends the browser when the payment is abandoned.")


class TopupCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The payment's id, as listed by GET /api/billing/topups.")
    url = serializers.CharField(help_text="The Stripe Checkout page: send the browser there to pay.")
    amount_usd = serializers.CharField()
    status = serializers.ChoiceField(choices=Payment.Status.choices)


class PaymentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Payment.Kind.choices,
                                   help_text="checkout: a top-up paid on Stripe's page; auto_recharge: the saved card.")
    status = serializers.ChoiceField(choices=Payment.Status.choices)
    amount_usd = serializers.SerializerMethodField()
    currency = serializers.CharField()
    credited_usd = USDReadField(source="credited_micro", help_text="Credit the payment added to the balance.")
    refunded_usd = serializers.SerializerMethodField(help_text="Refunded by Stripe so far.")
    failure_message = serializers.CharField()
    created_at = UnixTimeField()
    created_by = serializers.SerializerMethodField()

    def get_amount_usd(self, payment) -> str:
        return cents_usd(payment.amount_cents)

    def get_refunded_usd(self, payment) -> str:
        return cents_usd(payment.refunded_cents)

    def get_created_by(self, payment) -> str | None:
        return _email(payment.created_by)


def balance_data(account) -> dict:
    balance, held = (account.balance_micro, account.held_micro) if account else (0, 0)
    return BalanceSerializer({"balance_micro": balance, "held_micro": held, "available_micro": balance - held,
                              "currency": settings.STRIPE_CURRENCY}).data

