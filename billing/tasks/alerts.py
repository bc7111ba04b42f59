from celery import shared_task
from django.db.models import Q

from accounts.models import Organization
from billing.models import BillingProfile, CreditAccount
from billing.notify import notify_low_balance
from billing.triggers import balance_lowered, balance_raised


@shared_task(name="billing.low_balance_alert")
def low_balance_alert(organization_id: int) -> int:
    """Email the organization's owners and admins that its available credit is under their threshold."""
    organization = Organization.objects.get(pk=organization_id)
    account = CreditAccount.objects.get(organization=organization)
    profile = BillingProfile.objects.get(organization=organization)
    return notify_low_balance(organization, available_micro=account.available_micro,
                              threshold_micro=profile.low_balance_threshold_micro)


@shared_task(name="billing.check_balances")
def check_balances() -> int:
    """Catch threshold crossings no charge reported (holds, changed thresholds): re-arm, then trigger."""
    ids = list(BillingProfile.objects.filter(Q(low_balance_threshold_micro__gt=0) | Q(auto_recharge_enabled=True))
               .values_list("organization_id", flat=True))
    for organization_id in ids:
        balance_raised(organization_id)
        balance_lowered(organization_id)
    return len(ids)
