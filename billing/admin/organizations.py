"""The admin of organizations: members, limits, retention, and their balance with the staff's adjust and refund actions."""
from django.conf import settings
from django.contrib import admin
from django.db.models import Count

from accounts.admin import MembershipInline
from accounts.admin_dates import BoundedDateHierarchyMixin
from accounts.models import Organization
from billing.admin.actions import BalanceActionsMixin
from core.money import usd


@admin.register(Organization)
class OrganizationAdmin(BalanceActionsMixin, BoundedDateHierarchyMixin, admin.ModelAdmin):
    list_display = ["name", "balance", "available", "member_count", "rate_limit_rpm", "rate_limit_tpm",
                    "session_retention_days", "auto_create_sessions", "created_at"]
    list_filter = ["auto_create_sessions"]
    search_fields = ["name"]
    date_hierarchy = "created_at"
    inlines = [MembershipInline]
    readonly_fields = ["balance", "available", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "created_at", "balance", "available"]}),
        ("Limits", {"fields": ["rate_limit_rpm", "rate_limit_tpm"]}),
        ("Sessions", {"fields": ["auto_create_sessions", "session_retention_days", "session_storage_quota_bytes"],
                      "description": "Storage quota empty: CHAT_SESSION_QUOTA_BYTES."}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("credit_account").annotate(
            member_count=Count("memberships", distinct=True))

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        fields = form.base_fields
        if "rate_limit_rpm" in fields:
            fields["rate_limit_rpm"].help_text = f"Requests per minute, all keys together. Empty: the default, " \
                                                 f"{settings.ORG_RATE_LIMIT_RPM:,}."
            fields["rate_limit_tpm"].help_text = f"Tokens per minute, all keys together. Empty: the default, " \
                                                 f"{settings.ORG_RATE_LIMIT_TPM:,}."
            fields["session_retention_days"].help_text = "Sessions untouched this many days are deleted. " \
                                                         "Empty: kept."
        return form

    @staticmethod
    def _account(obj):
        return getattr(obj, "credit_account", None)

    @admin.display(description="Balance", ordering="credit_account__balance_micro")
    def balance(self, obj):
        account = self._account(obj)
        return usd(account.balance_micro) if account else "—"

    @admin.display(description="Available")
    def available(self, obj):
        account = self._account(obj)
        return usd(account.available_micro) if account else "—"

    @admin.display(description="Members", ordering="member_count")
    def member_count(self, obj):
        return obj.member_count
