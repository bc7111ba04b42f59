from django.contrib import admin
from django.urls import include, path

from accounts.web.auth import throttled
from accounts.web.forms import AdminLoginForm
from config import metrics, probes
from inference.api import tokenize

admin.site.login_form = AdminLoginForm


urlpatterns = [
    path("healthz", probes.healthz),
    path("livez", probes.livez),
    path("health", probes.livez),  # vLLM's name for the same probe
    path("readyz", probes.readyz),
    path("metrics", metrics.metrics),
    path("v1/", include("inference.urls")),
    path("tokenize", tokenize.tokenize),  # vLLM's, at its paths
    path("detokenize", tokenize.detokenize),
    path("api/", include("accounts.api.urls")),  # sessions, the OpenAPI schema and its docs
    path("api/billing/", include("billing.api.urls")),  # an organization's balance, usage, top-ups and limits
    path("api/v1/", include("inference.urls")),  # the OpenAI-compatible endpoints again, under /api
    path("staff/billing/", include("billing.staff.urls")),  # the operators' billing overview and CSV exports
    path("billing/stripe/", include("billing.stripe.urls")),  # the Stripe webhook
    # The admin's log-in is the dashboard's, throttled the same way (before admin.site.urls, which has one too).
    path("admin/login/", throttled(admin.site.login)),
    path("admin/", admin.site.urls),
    # The dashboard: account pages (sign-up, organizations, team, keys, sessions), usage and billing, playground.
    path("", include("billing.web.urls")),
    path("", include("inference.web.urls")),
    path("", include("accounts.web.urls")),
]

handler400 = "config.views.bad_request"
handler403 = "config.views.permission_denied"
handler404 = "config.views.not_found"
handler500 = "config.views.server_error"
