"""fake_stripe: a running fake Stripe (tests/billing/fake_stripe.py), the settings pointing the library and the
webhook at it for the test."""
import pytest


@pytest.fixture
def fake_stripe(settings):
    from tests.billing.fake_stripe import WEBHOOK_SECRET, FakeStripe

    fake = FakeStripe()
    settings.STRIPE_SECRET_KEY = fake.api_key
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.BILLING_ALERT_EMAILS = ["billing-ops@example.com"]
    yield fake
    fake.stop()
