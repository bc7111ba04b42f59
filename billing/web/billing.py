"""The billing page: balance, ledger and payments for every member; top-ups and settings for managers.

A top-up opens Stripe Checkout (billing.stripe.checkout) and credits nothing here: the credit is posted
when Stripe's signed webhook confirms the payment. Settings are saved through the billing API's validation.
"""
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse

from accounts.tenancy import can_manage
from accounts.web.decorators import manager_required, member_required
from billing.models import BillingProfile, CreditAccount, LedgerEntry, Payment
from billing.stripe.checkout import CheckoutFailed, TopupAmountInvalid, topup_session_create
from billing.stripe.client import StripeNotConfigured, stripe_configured
from billing.web.forms import BillingSettingsForm, TopupForm, usd_message
from core.money import cents_to_micro, usd

LEDGER_PER_PAGE = 25
RECENT_PAYMENTS = 10
PAYMENTS_OFF = ("Card payments are not available on this server (Stripe is not configured). "
                "Ask the operator for credit.")
TOPUP_OUTCOMES = {
    "success": ("success", "Payment received. The credit appears when Stripe confirms it, usually within a "
                           "minute: reload this page to see it."),
    "cancelled": ("info", "Top-up cancelled: nothing was charged."),
}


class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303


def _profile(organization) -> BillingProfile:
    return (BillingProfile.objects.filter(organization=organization).first()
            or BillingProfile(organization=organization))


def _balance(organization) -> dict:
    account = CreditAccount.objects.filter(organization=organization).first()
    balance, held = (account.balance_micro, account.held_micro) if account else (0, 0)
    return {"balance": usd(balance), "held": usd(held), "available": usd(balance - held)}


def _ledger_page(request):
    entries = LedgerEntry.objects.filter(account__organization=request.organization).order_by("-created_at", "-id")
    page = Paginator(entries, LEDGER_PER_PAGE).get_page(request.GET.get("page"))
    for entry in page:
        entry.amount = usd(entry.amount_micro)
        entry.balance_after = usd(entry.balance_after_micro)
    return page


def _payments(organization) -> list[Payment]:
    payments = list(Payment.objects.filter(organization=organization).order_by("-created_at", "-id")[:RECENT_PAYMENTS])
    for payment in payments:
        payment.amount = usd(cents_to_micro(payment.amount_cents))
        payment.credited = usd(payment.credited_micro)
        payment.refunded = usd(cents_to_micro(payment.refunded_cents))
    return payments


def _render(request, *, topup_form=None, settings_form=None):
    """The page, with a submitted form (and its errors) in place of the blank one."""
    organization = request.organization
    manager = can_manage(request.membership)
    profile = _profile(organization)
    if settings_form is None:
        settings_form = BillingSettingsForm(initial=BillingSettingsForm.initial_of(profile), read_only=not manager)
    outcome = TOPUP_OUTCOMES.get(request.GET.get("topup", ""))
    return render(request, "dashboard/billing/page.html", {
        **_balance(organization),
        "topup_outcome": outcome,
        "payments_available": stripe_configured(),
        "payments_off": PAYMENTS_OFF,
        "topup_form": topup_form or TopupForm(),
        "settings_form": settings_form,
        "card_saved": bool(profile.stripe_payment_method_id),
        "page_obj": _ledger_page(request),
        "payments": _payments(organization),
    })


@member_required
def billing_page(request):
    return _render(request)


@manager_required
def topup(request):
    """Start a Checkout top-up and send the browser to Stripe's page (303), or show why not."""
    if request.method != "POST":
        return redirect("billing")
    form = TopupForm(request.POST)
    if form.is_valid():
        page = request.build_absolute_uri(reverse("billing"))
        try:
            _, url = topup_session_create(
                organization=request.organization, amount_micro=form.cleaned_data["amount_usd"],
                created_by=request.user, success_url=f"{page}?topup=success", cancel_url=f"{page}?topup=cancelled")
        except StripeNotConfigured:
            form.add_error(None, PAYMENTS_OFF)
        except TopupAmountInvalid as exc:
            form.add_error("amount_usd", usd_message(str(exc)))
        except CheckoutFailed as exc:
            form.add_error(None, f"{exc} Nothing was charged; please try again.")
        else:
            return HttpResponseSeeOther(url)
    return _render(request, topup_form=form)


@manager_required
def settings_update(request):
    """Save auto-recharge and the low-balance alert; a changed threshold re-arms its trigger."""
    if request.method != "POST":
        return redirect("billing")
    form = BillingSettingsForm(request.POST)
    if form.is_valid() and form.save(organization=request.organization) is not None:
        messages.success(request, "Billing settings saved.")
        return redirect(f"{reverse('billing')}#billing-settings")
    return _render(request, settings_form=form)
