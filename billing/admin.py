from django.contrib import admin

from billing.models import CreditAccount, Hold, LedgerEntry, ModelPrice, UsageRecord


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model_id", "input_micro_per_mtok", "output_micro_per_mtok", "updated_at"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money rows change only through billing.services, never by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(CreditAccount)
class CreditAccountAdmin(ReadOnlyAdmin):
    list_display = ["organization", "balance_micro", "held_micro", "updated_at"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "account", "kind", "amount_micro", "balance_after_micro", "description"]
    list_filter = ["kind"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["request_id", "account", "model_id", "amount_micro", "status", "created_at"]
    list_filter = ["status"]


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "organization", "model_id", "prompt_tokens", "completion_tokens", "cost_micro", "status"]
    list_filter = ["status", "model_id"]
