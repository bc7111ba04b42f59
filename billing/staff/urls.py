from django.urls import path

from billing.staff.views import billing_export, billing_page

app_name = "staff_billing"

urlpatterns = [
    path("", billing_page, name="page"),
    path("export/<slug:table>.csv", billing_export, name="export"),
]
