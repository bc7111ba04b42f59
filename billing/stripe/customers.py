"""One Stripe customer per organization, created the first time it pays.

Concurrent first payments may both ask Stripe for a customer: the idempotency key makes Stripe answer
both with the same one, and the conditional update records only the first id seen, so an organization
never ends up with two customers recorded.
"""
from accounts.models import Organization
from billing.models import BillingProfile
from billing.stripe.client import stripe_client


def profile_for(*, organization: Organization) -> BillingProfile:
    profile, _ = BillingProfile.objects.get_or_create(organization=organization)
    return profile


def customer_for(*, organization: Organization) -> str:
    """The organization's Stripe customer id, creating the customer if it has none yet."""
    profile = profile_for(organization=organization)
    if profile.stripe_customer_id:
        return profile.stripe_customer_id
    customer = stripe_client().v1.customers.create(
        params={"name": organization.name, "metadata": {"organization_id": str(organization.pk)}},
        options={"idempotency_key": f"customer-org-{organization.pk}"},
    )
    BillingProfile.objects.filter(pk=profile.pk, stripe_customer_id="").update(stripe_customer_id=customer.id)
    profile.refresh_from_db(fields=["stripe_customer_id"])
    return profile.stripe_customer_id
