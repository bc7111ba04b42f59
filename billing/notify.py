"""Emails about money: to an organization's owners and admins, and to the operators (BILLING_ALERT_EMAILS)."""
import logging
import smtplib

from django.conf import settings
from django.core.mail import send_mail

from accounts.models import Membership, Organization
from billing.models import PaymentIssue
from core.money import usd

log = logging.getLogger(__name__)


def organization_admin_emails(organization: Organization) -> list[str]:
    return sorted(Membership.objects.filter(
        organization=organization, role__in=Membership.MANAGER_ROLES,
    ).values_list("user__email", flat=True))


def _send(subject: str, body: str, recipients: list[str]) -> int:
    recipients = sorted({r for r in recipients if r})
    if not recipients:
        log.warning("no one to tell: %s", subject)
        return 0
    try:
        return send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
    except (smtplib.SMTPException, OSError):
        # What the email is about is recorded either way (ledger, payment issue); never fail its caller.
        log.exception("email not sent: %s", subject)
        return 0


def notify_low_balance(organization: Organization, *, available_micro: int, threshold_micro: int) -> int:
    subject = f"[{organization.name}] Your credit balance is low: {usd(available_micro)}"
    body = (f"The available credit of {organization.name} is {usd(available_micro)}, under the alert threshold "
            f"of {usd(threshold_micro)}.\n\nTop up from the billing page, or turn on auto-recharge, so that "
            "requests keep being served.\n")
    return _send(subject, body, organization_admin_emails(organization))


def notify_payment_issue(issue: PaymentIssue) -> int:
    """A failed payment, a dispute or a refund shortfall: the organization's admins and the operators."""
    org = issue.organization
    label = issue.get_kind_display()
    subject = f"[{org.name if org else 'billing'}] {label}: {issue.amount_cents / 100:,.2f} {settings.STRIPE_CURRENCY.upper()}"
    body = f"{label} for {org.name if org else 'an unknown organization'}.\n\n{issue.detail}\n\nStripe object: {issue.stripe_object_id}\n"
    recipients = list(settings.BILLING_ALERT_EMAILS)
    if org is not None:
        recipients += organization_admin_emails(org)
    return _send(subject, body, recipients)
