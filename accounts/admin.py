"""Django admin of users, organization members, invitations and API keys (organizations: billing/admin/organizations.py).

A key's secret is never stored and its digest is of no use to a person, so neither is shown; keys are
created where their secret can be shown once, so the admin cannot add them, only limit or revoke them.
"""
import re

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import Q
from django.utils import timezone

from accounts.admin_dates import BoundedDateHierarchyMixin
from accounts.models import APIKey, Invitation, Membership, User
from accounts.services import api_key_revoke
from core.forms import MicroUSDField
from core.money import usd


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "name"]
    fieldsets = [
        (None, {"fields": ["email", "password", "name"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class ModelListField(forms.Field):
    """Model ids, one per line (or separated by commas), kept as a JSON list; empty allows every model."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        if isinstance(value, list):
            return value
        ids = [part for part in re.split(r"[\s,]+", value or "") if part]
        too_long = [i for i in ids if len(i) > 200]
        if too_long:
            raise forms.ValidationError(f"Not a model id (over 200 characters): {too_long[0][:40]}…")
        return list(dict.fromkeys(ids))


class APIKeyForm(forms.ModelForm):
    allowed_models = ModelListField(required=False, label="Allowed models",
                                    help_text="One model id per line. Empty: every model.")
    spend_cap_micro = MicroUSDField(required=False, min_micro=0, label="Spend cap (USD)",
                                    help_text="Most the key may spend per window (UTC day, ISO week or month). "
                                              "Empty: no cap.")

    class Meta:
        model = APIKey
        fields = ["name", "expires_at", "allowed_models", "rate_limit_rpm", "rate_limit_tpm", "spend_cap_micro",
                  "spend_cap_window"]


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), revoked_at__isnull=True)
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now, revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.action(description="Revoke selected keys", permissions=["change"])
def revoke_keys(modeladmin, request, queryset):
    keys = list(queryset.filter(revoked_at__isnull=True))
    for key in keys:
        api_key_revoke(key=key)
    modeladmin.message_user(request, f"Revoked {len(keys)} key(s); revoked keys stop working at once.",
                            messages.SUCCESS)


@admin.register(APIKey)
class APIKeyAdmin(BoundedDateHierarchyMixin, admin.ModelAdmin):
    form = APIKeyForm
    list_display = ["name", "prefix", "organization", "created_by", "created_at", "last_used_at", "expires_at",
                    "revoked_at", "spend_cap"]
    list_filter = [KeyStatusFilter, "spend_cap_window", "created_at"]
    list_select_related = ["organization", "created_by"]
    search_fields = ["name", "prefix", "organization__name", "created_by__email"]
    date_hierarchy = "created_at"
    actions = [revoke_keys]
    readonly_fields = ["organization", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    fieldsets = [
        (None, {"fields": ["name", "organization", "prefix", "created_by", "created_at", "last_used_at"]}),
        ("Validity", {"fields": ["expires_at", "revoked_at"]}),
        ("Limits", {"fields": ["allowed_models", "rate_limit_rpm", "rate_limit_tpm", "spend_cap_micro",
                               "spend_cap_window"]}),
    ]

    def has_add_permission(self, request):
        return False  # keys are created where their secret can be shown once

    @admin.display(description="Spend cap", ordering="spend_cap_micro")
    def spend_cap(self, obj):
        if obj.spend_cap_micro is None:
            return "—"
        return f"{usd(obj.spend_cap_micro)} / {obj.get_spend_cap_window_display().lower()}"


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Pending and accepted invitations; the token is the accept link's secret, so it is never shown."""

    list_display = ["email", "organization", "role", "invited_by", "created_at", "expires_at", "accepted_at"]
    list_filter = ["role"]
    search_fields = ["email", "organization__name"]
    list_select_related = ["organization", "invited_by"]
    exclude = ["token"]
    readonly_fields = ["organization", "email", "role", "invited_by", "created_at", "expires_at", "accepted_at"]

    def has_add_permission(self, request):
        return False  # invitations are sent from the dashboard, which emails the link
