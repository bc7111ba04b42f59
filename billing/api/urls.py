from django.urls import path

from billing.api.control_views import BillingSettingsView, KeyLimitsView, OrganizationLimitsView
from billing.api.views import BalanceView, LedgerView, TopupsView, UsageView

urlpatterns = [
    path("balance", BalanceView.as_view(), name="api-billing-balance"),
    path("ledger", LedgerView.as_view(), name="api-billing-ledger"),
    path("usage", UsageView.as_view(), name="api-billing-usage"),
    path("topups", TopupsView.as_view(), name="api-billing-topups"),
    path("limits", OrganizationLimitsView.as_view(), name="api-billing-limits"),
    path("keys/<str:key_id>/limits", KeyLimitsView.as_view(), name="api-billing-key-limits"),
    path("settings", BillingSettingsView.as_view(), name="api-billing-settings"),
]
