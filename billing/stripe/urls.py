from django.urls import path

from billing.stripe import views

urlpatterns = [
    path("webhook", views.webhook, name="stripe-webhook"),
]
