"""Read-only admin views of money rows: accounts, the ledger, holds, usage, payments and Stripe's trail.

Nothing here adds, edits or deletes a row; a balance changes only through billing.services, and for
staff only through the adjust and refund actions (billing.admin.actions).
"""
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.admin.actions import BalanceActionsMixin
from billing.admin.readonly import ReadOnlyAdmin
from billing.models import (
    BillingProfile, CreditAccount, Hold, LedgerEntry, Payment, PaymentIssue, StripeEvent, UsageDaily, UsageRecord,
)
from billing.staff.formats import age
from core.money import cents_to_micro, usd


def usd_column(field: str, description: str, *, cents: bool = False):
    @admin.display(description=description, ordering=field)
    def column(obj):
        value = getattr(obj, field)
        return usd(cents_to_micro(value) if cents else value)

    column.__name__ = f"{field}_usd"
    return column


@admin.register(CreditAccount)
class CreditAccountAdmin(BalanceActionsMixin, ReadOnlyAdmin):
    list_display = ["organization", usd_column("balance_micro", "Balance"), usd_column("held_micro", "Held"),
                    "available", "updated_at", "ledger"]
    list_select_related = ["organization"]
    search_fields = ["organization__name"]
    ordering = ["organization__name"]
    readonly_fields = ["available", "ledger"]

    @admin.display(description="Available")
    def available(self, obj):
        return usd(obj.available_micro)

    @admin.display(description="Ledger")
    def ledger(self, obj):
        url = reverse("admin:billing_ledgerentry_changelist") + f"?account__id__exact={obj.pk}"
        return format_html('<a href="{}">entries</a>', url)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "account__organization", "kind", usd_column("amount_micro", "Amount"),
                    usd_column("balance_after_micro", "Balance after"), "description", "reference", "created_by"]
    list_filter = ["kind", "created_at"]
    list_select_related = ["account__organization", "created_by"]
    search_fields = ["account__organization__name", "reference", "description", "created_by__email"]
    date_hierarchy = "created_at"


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["request_id", "account__organization", "model_id", usd_column("amount_micro", "Held"),
                    "status", "created_at", "held_for", "closed_at"]
    list_filter = ["status", "model_id"]
    list_select_related = ["account__organization"]
    search_fields = ["request_id", "account__organization__name"]
    date_hierarchy = "created_at"

    @admin.display(description="Age")
    def held_for(self, obj):
        return age((obj.closed_at or timezone.now()) - obj.created_at)


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "organization", "api_key", "model_id", "prompt_tokens", "cached_tokens",
                    "completion_tokens", usd_column("cost_micro", "Cost"), "status", "finish_reason", "latency_ms"]
    list_filter = ["status", "model_id"]
    list_select_related = ["organization", "api_key"]
    search_fields = ["request_id", "organization__name", "api_key__prefix"]
    date_hierarchy = "created_at"


@admin.register(UsageDaily)
class UsageDailyAdmin(ReadOnlyAdmin):
    list_display = ["day", "organization", "api_key", "model_id", "requests", "prompt_tokens", "completion_tokens",
                    usd_column("cost_micro", "Cost")]
    list_filter = ["model_id"]
    list_select_related = ["organization", "api_key"]
    search_fields = ["organization__name", "model_id", "api_key__prefix"]
    date_hierarchy = "day"


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "organization", "kind", "status", usd_column("amount_cents", "Amount", cents=True),
                    usd_column("credited_micro", "Credited"), usd_column("refunded_cents", "Refunded", cents=True),
                    usd_column("clawed_back_micro", "Clawed back"), "stripe_payment_intent_id"]
    list_filter = ["status", "kind"]
    list_select_related = ["organization"]
    search_fields = ["organization__name", "stripe_payment_intent_id", "stripe_checkout_session_id",
                     "stripe_charge_id"]
    date_hierarchy = "created_at"


@admin.register(PaymentIssue)
class PaymentIssueAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "organization", "kind", usd_column("amount_cents", "Amount", cents=True),
                    "stripe_object_id", "payment", "detail"]
    list_filter = ["kind"]
    list_select_related = ["organization", "payment"]
    search_fields = ["organization__name", "stripe_object_id", "detail"]
    date_hierarchy = "created_at"


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "event_id", "type", "source"]
    list_filter = ["source", "type"]
    search_fields = ["event_id", "type"]
    date_hierarchy = "received_at"


@admin.register(BillingProfile)
class BillingProfileAdmin(ReadOnlyAdmin):
    """Set by the organization's own admins; shown here so an operator can see why a recharge did or did not run."""

    list_display = ["organization", "stripe_customer_id", "auto_recharge_enabled",
                    usd_column("auto_recharge_threshold_micro", "Recharge under"),
                    usd_column("auto_recharge_amount_micro", "Recharge by"),
                    usd_column("low_balance_threshold_micro", "Alert under"), "updated_at"]
    list_filter = ["auto_recharge_enabled"]
    list_select_related = ["organization"]
    search_fields = ["organization__name", "stripe_customer_id"]
