"""The one money service: every change of a balance goes through here.

Each function runs in one transaction; a balance change and its ledger row are
written together or not at all. Holds reserve credit with a single conditional
UPDATE, so two concurrent requests can never spend the same credit.
"""
import logging
from functools import partial

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import APIKey, Organization
from billing.metrics import record_settlement
from billing.models import CreditAccount, Hold, LedgerEntry, ModelPrice, UsageRecord
from billing.spend import spend_cap_check
from billing.triggers import on_commit_lowered, on_commit_raised
from core.money import Price, cached_within

log = logging.getLogger(__name__)


class InsufficientCredit(Exception):
    def __init__(self, *, needed_micro: int, available_micro: int):
        self.needed_micro = needed_micro
        self.available_micro = available_micro
        super().__init__(f"needs {needed_micro} micro-USD, {available_micro} available")


class HoldReleased(UsageRecord.DoesNotExist):
    """hold_settle of a hold already released (its request never ran, or the sweeper freed it): nothing is
    charged and no usage is recorded. A UsageRecord.DoesNotExist too, for callers written against what this
    raised before."""

    def __init__(self, hold: Hold):
        self.request_id = hold.request_id
        super().__init__(f"the hold of request {hold.request_id} was released: there is nothing to settle")


def account_for(*, organization: Organization) -> CreditAccount:
    account, _ = CreditAccount.objects.get_or_create(organization=organization)
    return account


@transaction.atomic
def ledger_post(
    *, organization: Organization, kind: str, amount_micro: int, description: str = "", created_by=None,
    reference: str = "",
) -> LedgerEntry:
    """Add a signed amount to the balance and record it. Refuses to leave holds uncovered."""
    if kind == LedgerEntry.Kind.USAGE:
        raise ValueError("usage is charged by hold_settle")
    account = account_for(organization=organization)
    account = CreditAccount.objects.select_for_update().get(pk=account.pk)
    new_balance = account.balance_micro + amount_micro
    if new_balance < account.held_micro:
        raise InsufficientCredit(needed_micro=-amount_micro, available_micro=account.available_micro)
    account.balance_micro = new_balance
    account.save(update_fields=["balance_micro", "updated_at"])
    (on_commit_raised if amount_micro > 0 else on_commit_lowered)(organization.pk)
    return LedgerEntry.objects.create(
        account=account,
        kind=kind,
        amount_micro=amount_micro,
        balance_after_micro=new_balance,
        description=description,
        reference=reference,
        created_by=created_by,
    )


def credit_grant(*, organization: Organization, amount_micro: int, description: str = "", created_by=None):
    if amount_micro <= 0:
        raise ValueError("a grant must be positive")
    return ledger_post(
        organization=organization,
        kind=LedgerEntry.Kind.GRANT,
        amount_micro=amount_micro,
        description=description or "credit grant",
        created_by=created_by,
    )


def price_get(*, model_id: str, default: Price) -> Price:
    """The model's price, creating its row from the registry's default the first time it is used."""
    cached = default.cached_input_micro_per_mtok
    row, _ = ModelPrice.objects.get_or_create(
        model_id=model_id,
        defaults={
            "input_micro_per_mtok": default.input_micro_per_mtok,
            "output_micro_per_mtok": default.output_micro_per_mtok,
            # The default (half the input price) is kept as null, so it follows the input price when staff change it.
            "cached_input_micro_per_mtok": None if cached == default.input_micro_per_mtok // 2 else cached,
        },
    )
    return row.price()


@transaction.atomic
def hold_place(
    *,
    organization: Organization,
    api_key: APIKey | None,
    request_id: str,
    model_id: str,
    prompt_tokens: int,
    max_tokens: int,
    price: Price,
) -> Hold:
    """Reserve the most this request can cost, or raise InsufficientCredit (SpendCapReached over the key's cap).

    Every prompt token is reserved at the full input price: how much of the prompt the cache serves is
    known only once the request runs.
    """
    amount = price.cost_micro(prompt_tokens=prompt_tokens, completion_tokens=max_tokens)
    if api_key is not None:
        spend_cap_check(api_key=api_key, amount_micro=amount)
    account = account_for(organization=organization)
    reserved = CreditAccount.objects.filter(pk=account.pk, balance_micro__gte=F("held_micro") + amount).update(
        held_micro=F("held_micro") + amount
    )
    if not reserved:
        account.refresh_from_db()
        raise InsufficientCredit(needed_micro=amount, available_micro=account.available_micro)
    return Hold.objects.create(
        account=account,
        api_key=api_key,
        request_id=request_id,
        model_id=model_id,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        input_micro_per_mtok=price.input_micro_per_mtok,
        output_micro_per_mtok=price.output_micro_per_mtok,
        cached_input_micro_per_mtok=price.cached_input_micro_per_mtok,
        amount_micro=amount,
    )


def _close(hold: Hold, status: str) -> bool:
    """Mark an active hold closed; False when another caller already closed it."""
    return bool(
        Hold.objects.filter(pk=hold.pk, status=Hold.Status.ACTIVE).update(status=status, closed_at=timezone.now())
    )


@transaction.atomic
def hold_settle(
    *,
    hold: Hold,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    status: str = UsageRecord.Status.COMPLETED,
    finish_reason: str = "",
    latency_ms: int = 0,
) -> UsageRecord:
    """Charge the request's exact usage and free the rest of its hold.

    Idempotent: settling an already settled hold returns its usage record and
    charges nothing more. A failed request is charged only the tokens it
    generated; its prompt was wasted by us, not by the client. `cached_tokens`
    of the prompt are charged the cached input price the hold recorded.
    Raises HoldReleased, writing nothing, when the hold was released instead.
    """
    if not _close(hold, Hold.Status.SETTLED):
        record = UsageRecord.objects.filter(hold=hold).first()
        if record is None:
            raise HoldReleased(hold)
        return record
    cached = cached_within(cached_tokens, prompt_tokens)
    if cached != cached_tokens:
        log.error("request %s reported %s cached of %s prompt tokens; %s billed as cached", hold.request_id,
                  cached_tokens, prompt_tokens, cached)
    failed = status == UsageRecord.Status.FAILED
    cost = hold.price().cost_micro(prompt_tokens=0 if failed else prompt_tokens, completion_tokens=completion_tokens,
                                   cached_tokens=0 if failed else cached)
    if cost > hold.amount_micro:
        # Only possible if a worker reported more tokens than were reserved.
        log.error("request %s cost %s exceeds its hold %s; capped", hold.request_id, cost, hold.amount_micro)
        cost = hold.amount_micro
    account = CreditAccount.objects.select_for_update().get(pk=hold.account_id)
    account.balance_micro -= cost
    account.held_micro -= hold.amount_micro
    account.save(update_fields=["balance_micro", "held_micro", "updated_at"])
    if cost:
        LedgerEntry.objects.create(
            account=account,
            kind=LedgerEntry.Kind.USAGE,
            amount_micro=-cost,
            balance_after_micro=account.balance_micro,
            description=f"{hold.model_id} {hold.request_id}",
            reference=hold.request_id,
        )
        on_commit_lowered(account.organization_id)
    transaction.on_commit(partial(record_settlement, model=hold.model_id, prompt_tokens=prompt_tokens,
                                  completion_tokens=completion_tokens, cached_tokens=cached, status=status,
                                  latency_ms=latency_ms))
    return UsageRecord.objects.create(
        organization_id=account.organization_id,
        api_key=hold.api_key,
        hold=hold,
        request_id=hold.request_id,
        model_id=hold.model_id,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached,
        completion_tokens=completion_tokens,
        input_micro_per_mtok=hold.input_micro_per_mtok,
        output_micro_per_mtok=hold.output_micro_per_mtok,
        cached_input_micro_per_mtok=hold.cached_input_micro_per_mtok,
        cost_micro=cost,
        status=status,
        finish_reason=finish_reason,
        latency_ms=latency_ms,
    )


@transaction.atomic
def hold_release(*, hold: Hold) -> bool:
    """Free a hold without charging (the request never ran). False if it was already closed."""
    if not _close(hold, Hold.Status.RELEASED):
        return False
    CreditAccount.objects.filter(pk=hold.account_id).update(held_micro=F("held_micro") - hold.amount_micro)
    return True
