from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Organization
from billing.services import account_for, credit_grant
from core.money import AmountError, parse_usd
from core.money import usd as usd_text


def find_organization(ref: str) -> Organization:
    """An organization by id (digits) or by name in any case."""
    ref = ref.strip()
    if not ref:
        raise CommandError("--org must name an organization (its id or its name)")
    found = Organization.objects.filter(pk=int(ref)).first() if ref.isdigit() else None
    found = found or Organization.objects.filter(name__iexact=ref).order_by("pk").first()
    if found is None:
        raise CommandError(f"no organization has the id or name {ref[:100]!r} (createkey --org creates one)")
    return found


class Command(BaseCommand):
    help = (
        "Grant USD of credit to an existing organization, chosen by id or name, as one ledger entry "
        "that keeps the reason (as the admin's 'Adjust balance' action does). Prints the new balance."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="the organization's id or name (any case)")
        parser.add_argument("--usd", required=True, help="the credit to grant, in USD (e.g. 25 or 12.50)")
        parser.add_argument("--reason", required=True, help="why: kept in the ledger (e.g. a ticket or an offer)")

    def handle(self, *args, org, usd: str, reason, **options):
        reason = reason.strip()
        if not reason or len(reason) > 255:
            raise CommandError("--reason must be 1 to 255 characters")
        try:
            amount = parse_usd(usd, minimum_micro=1)
        except AmountError as exc:
            raise CommandError(f"--usd {exc} (got {usd[:40]!r})") from None
        organization = find_organization(org)
        with transaction.atomic():
            credit_grant(organization=organization, amount_micro=amount, description=reason)
        balance = account_for(organization=organization).balance_micro
        self.stdout.write(f"Granted {usd_text(amount)} to {organization.name} (id {organization.pk}); "
                          f"balance {usd_text(balance)}")

