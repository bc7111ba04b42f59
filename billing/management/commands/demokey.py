import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Membership
from accounts.services import api_key_create, organization_get_or_create
from billing.services import account_for, credit_grant
from core.money import usd

DEMO_ORG = "demo"
DEMO_CREDIT_MICRO = 5_000_000
DEMO_EMAIL = "demo@example.com"


class Command(BaseCommand):
    help = (
        f"Print what a newcomer needs to try this server: a dashboard login for an owner of the '{DEMO_ORG}' "
        f"organization (its password is generated and printed on the first run only), a new API key of that "
        f"organization, and, with --url, the URL and a curl command. The organization is created on first use with "
        f"{DEMO_CREDIT_MICRO / 1e6:.2f} USD of credit; later runs add keys, not credit. --key-only prints the key alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", help="the server's base URL, e.g. http://127.0.0.1:8000")
        parser.add_argument("--key-only", action="store_true", help="print the new key alone")

    def handle(self, *args, url=None, key_only=False, **options):
        with transaction.atomic():
            organization, created = organization_get_or_create(name=DEMO_ORG)
            if created:
                credit_grant(organization=organization, amount_micro=DEMO_CREDIT_MICRO, description="demo credit")
            password = None if key_only else _demo_owner(organization)
            _, secret = api_key_create(organization=organization, name="demo")
        if key_only:
            self.stdout.write(secret)
            return
        balance = account_for(organization=organization).balance_micro
        lines = []
        if url:
            lines.append(f"Dashboard:  {url.rstrip('/')}/")
        if password:
            lines.append(f"Login:      {DEMO_EMAIL}  password: {password}  (shown this once)")
        else:
            lines.append(f"Login:      {DEMO_EMAIL}  (made on the first run; a new password: "
                         f".venv/bin/python manage.py changepassword {DEMO_EMAIL})")
        lines.append(f"API key:    {secret}  (organization '{organization.name}', {usd(balance)} of credit)")
        if url:
            lines.append(f"Try it:     curl {url.rstrip('/')}/v1/chat/completions -H 'Authorization: Bearer {secret}' "
                         """-H 'Content-Type: application/json' """
                         """-d '{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi!"}]}'""")
        self.stdout.write("\n".join(lines))


def _demo_owner(organization) -> str | None:
    """Make the demo login an owner of the organization; its new password, or None when it existed already."""
    users = get_user_model().objects
    user = users.filter(email=DEMO_EMAIL).first()
    password = None
    if user is None:
        password = secrets.token_urlsafe(12)
        user = users.create_user(DEMO_EMAIL, password, name="Demo owner")
    Membership.objects.get_or_create(user=user, organization=organization,
                                     defaults={"role": Membership.Role.OWNER})
    return password
