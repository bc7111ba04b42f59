"""Balance adjustments and refunds by staff: the only way an operator changes a balance.

Each action shows a form for an amount and a reason, then posts one ledger row per selected
organization through billing.services.ledger_post, recording the reason and the staff user. All the
selected organizations change in one transaction: a debit one of them cannot cover changes none.
"""
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db import transaction
from django.template.response import TemplateResponse

from accounts.models import Organization
from billing.models import CreditAccount, LedgerEntry
from billing.services import InsufficientCredit, ledger_post
from core.forms import MicroUSDField
from core.money import usd

PERMISSION = "billing.add_ledgerentry"
REFERENCE = "admin"


class BalanceChangeForm(forms.Form):
    amount = MicroUSDField(label="Amount (USD)")
    reason = forms.CharField(
        max_length=LedgerEntry._meta.get_field("description").max_length,
        error_messages={"required": "Give a reason: it is kept in the ledger with your name."},
        help_text="Shown in the ledger; say what happened, for example the incident or the ticket.",
    )

    def __init__(self, *args, refund: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.refund = refund
        self.fields["amount"].help_text = (
            "A positive amount in USD, exact to the micro-USD, for example 12.50." if refund
            else "Signed, in USD, exact to the micro-USD: 12.50 credits, -12.50 debits."
        )

    def clean_amount(self):
        micro = self.cleaned_data["amount"]
        if micro == 0:
            raise ValidationError("The amount must not be zero.")
        if self.refund and micro < 0:
            raise ValidationError("A refund gives credit back: enter a positive amount (use Adjust balance to debit).")
        return micro


def _organizations(queryset) -> list[Organization]:
    if queryset.model is CreditAccount:
        queryset = Organization.objects.filter(credit_account__in=queryset)
    return list(queryset.order_by("pk"))  # one lock order, whoever else posts at the same time


def _refusal(org: Organization, exc: InsufficientCredit) -> str:
    held = CreditAccount.objects.filter(organization=org).values_list("held_micro", flat=True).first() or 0
    in_flight = f" ({usd(held)} of the balance is held by requests in flight)" if held else ""
    return (f"{org.name}: a debit of {usd(exc.needed_micro)} is more than the {usd(exc.available_micro)} "
            f"available{in_flight}. Nothing was changed.")


def _summary(org: Organization, account: CreditAccount | None) -> dict:
    account = account or CreditAccount(organization=org)
    return {"name": org.name, "balance": usd(account.balance_micro), "held": usd(account.held_micro),
            "available": usd(account.available_micro)}


def _balance_change(modeladmin, request, queryset, *, kind: str, refund: bool, title: str):
    organizations = _organizations(queryset)
    form = BalanceChangeForm(request.POST if "apply" in request.POST else None, refund=refund)
    if form.is_valid():
        amount, reason = form.cleaned_data["amount"], form.cleaned_data["reason"]
        entries = []
        try:
            with transaction.atomic():
                for org in organizations:
                    entries.append(ledger_post(organization=org, kind=kind, amount_micro=amount, description=reason,
                                               created_by=request.user, reference=REFERENCE))
        except InsufficientCredit as exc:
            form.add_error("amount", _refusal(org, exc))
        else:
            for org, entry in zip(organizations, entries):
                done = f"Refunded {usd(amount)} to {org.name}" if refund else \
                    f"Adjusted the balance of {org.name} by {usd(amount)}"
                modeladmin.message_user(request, f"{done}; it is now {usd(entry.balance_after_micro)}.",
                                        messages.SUCCESS)
            return None
    accounts = {a.organization_id: a for a in CreditAccount.objects.filter(organization__in=organizations)}
    return TemplateResponse(request, "admin/billing/balance_change.html", {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "form": form,
        "accounts": [_summary(org, accounts.get(org.pk)) for org in organizations],
        "queryset": queryset,
        "action": request.POST.get("action"),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "submit": "Post refund" if refund else "Post adjustment",
    })


@admin.action(description="Adjust balance…", permissions=["ledger"])
def adjust_balance(modeladmin, request, queryset):
    return _balance_change(modeladmin, request, queryset, kind=LedgerEntry.Kind.ADJUSTMENT, refund=False,
                           title="Adjust balance")


@admin.action(description="Refund credit…", permissions=["ledger"])
def refund_credit(modeladmin, request, queryset):
    return _balance_change(modeladmin, request, queryset, kind=LedgerEntry.Kind.REFUND, refund=True,
                           title="Refund credit")


class BalanceActionsMixin:
    """Adds the two actions to an admin of organizations or credit accounts, for staff who may post to the ledger."""

    actions = [adjust_balance, refund_credit]

    def has_ledger_permission(self, request):
        return request.user.has_perm(PERMISSION)
