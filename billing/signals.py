"""What billing does when accounts change: every organization has a credit account from its first day, at zero."""
from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.models import Organization
from billing.services import account_for


@receiver(post_save, sender=Organization, dispatch_uid="billing.open_credit_account")
def open_credit_account(sender, instance: Organization, created: bool, raw: bool = False, **kwargs) -> None:
    if created and not raw:
        account_for(organization=instance)
