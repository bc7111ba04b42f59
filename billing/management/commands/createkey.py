from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.services import api_key_create, organization_get_or_create
from billing.services import credit_grant
from core.money import AmountError, parse_usd


class Command(BaseCommand):
    help = (
        "Create an API key for an organization (created if needed), optionally granting it "
        "credit through the ledger. Prints the key alone: it is not stored and cannot be shown again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization name")
        parser.add_argument("--credit-usd", default="0", help="USD of credit to grant the organization (default 0)")
        parser.add_argument("--name", default="default", help="a label for the key (default: default)")

    def handle(self, *args, org, credit_usd, name, **options):
        org = org.strip()
        if not org or len(org) > 100:
            raise CommandError("--org must be 1 to 100 characters")
        try:
            credit = parse_usd(credit_usd)
        except AmountError as exc:
            raise CommandError(f"--credit-usd {exc} (got {credit_usd[:40]!r})") from None
        with transaction.atomic():
            organization, _ = organization_get_or_create(name=org)
            if credit:
                credit_grant(organization=organization, amount_micro=credit, description="createkey")
            _, secret = api_key_create(organization=organization, name=name)
        self.stdout.write(secret)
