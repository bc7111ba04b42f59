from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.services import api_key_create, organization_get_or_create
from billing.services import credit_grant

DEMO_ORG = "demo"
DEMO_CREDIT_MICRO = 5_000_000


class Command(BaseCommand):
    help = (
        f"Print a new API key for the '{DEMO_ORG}' organization. The organization is created on first use "
        f"with {DEMO_CREDIT_MICRO / 1e6:.2f} USD of credit; later calls add keys, not credit."
    )

    def handle(self, *args, **options):
        with transaction.atomic():
            organization, created = organization_get_or_create(name=DEMO_ORG)
            if created:
                credit_grant(organization=organization, amount_micro=DEMO_CREDIT_MICRO, description="demo credit")
            _, secret = api_key_create(organization=organization, name="demo")
        self.stdout.write(secret)
