"""The dashboard pages of this app: usage, and billing (balance, ledger, top-ups, auto-recharge and alerts)."""
from django.urls import path

from billing.web import billing, usage

urlpatterns = [
    path("usage/", usage.usage_page, name="usage"),
    path("usage/requests.csv", usage.usage_csv, name="usage-csv"),
    path("billing/", billing.billing_page, name="billing"),
    path("billing/topup/", billing.topup, name="billing-topup"),
    path("billing/settings/", billing.settings_update, name="billing-settings"),
]
