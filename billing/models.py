"""Credit accounts, the append-only ledger, prices, holds and usage records.

All money is integer micro-USD (1 USD = 1_000_000). The balance of an account is
the sum of its ledger; credit reserved by requests in flight is `held_micro`,
which the balance must always cover.
"""
from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import APIKey, Organization
from core.money import MICRO_USD, Price



class CreditAccount(models.Model):
    organization = models.OneToOneField(Organization, on_delete=models.PROTECT, related_name="credit_account")
    balance_micro = models.BigIntegerField(default=0)
    held_micro = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # The last line of defence: whatever a service does, the database
            # refuses a balance that cannot cover what is reserved.
            models.CheckConstraint(condition=Q(held_micro__gte=0), name="held_not_negative"),
            models.CheckConstraint(condition=Q(balance_micro__gte=F("held_micro")), name="balance_covers_holds"),
        ]

    def __str__(self):
        return f"{self.organization}: {self.balance_micro / MICRO_USD:.6f} USD"

    @property
    def available_micro(self) -> int:
        return self.balance_micro - self.held_micro


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("ledger entries are append-only")

    def delete(self):
        raise TypeError("ledger entries are append-only")


class LedgerEntry(models.Model):
    class Kind(models.TextChoices):
        GRANT = "grant"
        TOPUP = "topup"
        USAGE = "usage"
        REFUND = "refund"  # credit given back by staff (a bad answer, an outage)
        ADJUSTMENT = "adjustment"  # a signed correction by staff
        CLAWBACK = "clawback"  # a Stripe refund takes back the credit its payment bought

    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount_micro = models.BigIntegerField()
    balance_after_micro = models.BigIntegerField()
    description = models.CharField(max_length=255, blank=True)
    # What the entry answers to: a Stripe payment intent, a request id, an admin action.
    reference = models.CharField(max_length=255, blank=True, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "ledger entries"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("ledger entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("ledger entries are append-only")


class ModelPrice(models.Model):
    """Price of a public model id, in micro-USD per million tokens."""

    model_id = models.CharField(max_length=200, unique=True)
    input_micro_per_mtok = models.BigIntegerField()
    output_micro_per_mtok = models.BigIntegerField()
    # Prompt tokens served from the prefix cache. Null: half the input price, following it when it changes.
    cached_input_micro_per_mtok = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(input_micro_per_mtok__gte=0) & Q(output_micro_per_mtok__gte=0), name="price_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(cached_input_micro_per_mtok__isnull=True) | Q(cached_input_micro_per_mtok__gte=0),
                name="cached_price_not_negative",
            ),
        ]

    def __str__(self):
        return self.model_id

    def price(self) -> Price:
        return Price(self.input_micro_per_mtok, self.output_micro_per_mtok, self.cached_input_micro_per_mtok)


class Hold(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SETTLED = "settled"
        RELEASED = "released"

    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="holds")
    api_key = models.ForeignKey(APIKey, null=True, blank=True, on_delete=models.SET_NULL)
    request_id = models.CharField(max_length=64, unique=True)
    model_id = models.CharField(max_length=200)
    prompt_tokens = models.PositiveIntegerField()
    max_tokens = models.PositiveIntegerField()
    # Prices are fixed when the hold is placed: a price change mid-request
    # must not change what this request costs.
    input_micro_per_mtok = models.BigIntegerField()
    output_micro_per_mtok = models.BigIntegerField()
    cached_input_micro_per_mtok = models.BigIntegerField()
    amount_micro = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"hold {self.request_id} ({self.status})"

    def price(self) -> Price:
        return Price(self.input_micro_per_mtok, self.output_micro_per_mtok, self.cached_input_micro_per_mtok)


class UsageRecord(models.Model):
    class Status(models.TextChoices):
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        FAILED = "failed"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="usage_records")
    api_key = models.ForeignKey(APIKey, null=True, blank=True, on_delete=models.SET_NULL)
    hold = models.OneToOneField(Hold, null=True, blank=True, on_delete=models.PROTECT, related_name="usage")
    request_id = models.CharField(max_length=64, unique=True)
    model_id = models.CharField(max_length=200)
    prompt_tokens = models.PositiveIntegerField()
    # Of prompt_tokens, those served from the prefix cache (charged the cached input price).
    cached_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField()
    input_micro_per_mtok = models.BigIntegerField()
    output_micro_per_mtok = models.BigIntegerField()
    # The cached input price charged (the hold's); null on records from before cached prices, all with 0 cached.
    cached_input_micro_per_mtok = models.BigIntegerField(null=True, blank=True)
    cost_micro = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices)
    finish_reason = models.CharField(max_length=20, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-id"]
        # A key's spend in its cap window is summed on every request the key makes.
        indexes = [models.Index(fields=["api_key", "created_at"])]

    def __str__(self):
        return f"{self.request_id}: {self.cost_micro} micro-USD"


class BillingProfile(models.Model):
    """An organization's payment and alert settings (created on first use, one per organization).

    The two "armed" flags make "at most once per threshold crossing" exact: crossing below the
    threshold disarms with one conditional update (only that caller acts); a credit that lifts the
    available balance back above the threshold re-arms.
    """

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="billing_profile")
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    # The card saved by a Checkout top-up (setup_future_usage=off_session), charged by auto-recharge.
    stripe_payment_method_id = models.CharField(max_length=255, blank=True)
    auto_recharge_enabled = models.BooleanField(default=False)
    auto_recharge_threshold_micro = models.BigIntegerField(default=0)
    auto_recharge_amount_micro = models.BigIntegerField(default=0)
    auto_recharge_armed = models.BooleanField(default=True)
    # Email the organization's owners and admins when the available balance falls under this (0: never).
    low_balance_threshold_micro = models.BigIntegerField(default=0)
    low_balance_armed = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(auto_recharge_threshold_micro__gte=0) & Q(auto_recharge_amount_micro__gte=0)
                & Q(low_balance_threshold_micro__gte=0),
                name="billing_profile_amounts_not_negative",
            ),
        ]

    def __str__(self):
        return f"billing profile of {self.organization}"


class Payment(models.Model):
    """One Stripe payment for credit: a Checkout top-up or an off-session auto-recharge."""

    class Kind(models.TextChoices):
        CHECKOUT = "checkout"
        AUTO_RECHARGE = "auto_recharge"

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="payments")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    stripe_checkout_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    amount_cents = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="usd")
    # What the ledger got for it: credited once, then clawed back as Stripe refunds it.
    credited_micro = models.BigIntegerField(default=0)
    refunded_cents = models.BigIntegerField(default=0)
    clawed_back_micro = models.BigIntegerField(default=0)
    failure_message = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount_cents__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(condition=Q(refunded_cents__gte=0) & Q(refunded_cents__lte=F("amount_cents")),
                                   name="payment_refund_within_amount"),
        ]

    def __str__(self):
        return f"{self.kind} {self.amount_cents / 100:.2f} {self.currency.upper()} ({self.status})"


class StripeEvent(models.Model):
    """Every Stripe event applied, by id: a replayed or duplicated event finds its row and changes nothing."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    source = models.CharField(max_length=16, default="webhook")  # or "reconcile"
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self):
        return f"{self.event_id} ({self.type})"


class PaymentIssue(models.Model):
    """Something an operator should see: a failed payment, a dispute, a refund that could not be clawed back."""

    class Kind(models.TextChoices):
        PAYMENT_FAILED = "payment_failed"
        DISPUTE = "dispute"
        REFUND_SHORTFALL = "refund_shortfall"

    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="payment_issues")
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="issues")
    kind = models.CharField(max_length=20, choices=Kind.choices, db_index=True)
    stripe_object_id = models.CharField(max_length=255, blank=True)
    amount_cents = models.BigIntegerField(default=0)
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.kind} {self.stripe_object_id}"


class UsageDaily(models.Model):
    """Usage summed per day, organization, key and model (rebuilt for a day by billing.rollups)."""

    day = models.DateField(db_index=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="usage_daily")
    api_key = models.ForeignKey(APIKey, null=True, blank=True, on_delete=models.SET_NULL)
    model_id = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_micro = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-day", "organization_id", "model_id"]
        verbose_name_plural = "daily usage"
        indexes = [models.Index(fields=["organization", "day"])]

    def __str__(self):
        return f"{self.day} {self.organization} {self.model_id}"
