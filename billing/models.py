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

MICRO_USD = 1_000_000


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
        REFUND = "refund"
        ADJUSTMENT = "adjustment"

    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount_micro = models.BigIntegerField()
    balance_after_micro = models.BigIntegerField()
    description = models.CharField(max_length=255, blank=True)
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
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(input_micro_per_mtok__gte=0) & Q(output_micro_per_mtok__gte=0), name="price_not_negative"
            ),
        ]

    def __str__(self):
        return self.model_id


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
    amount_micro = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"hold {self.request_id} ({self.status})"


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
    completion_tokens = models.PositiveIntegerField()
    input_micro_per_mtok = models.BigIntegerField()
    output_micro_per_mtok = models.BigIntegerField()
    cost_micro = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices)
    finish_reason = models.CharField(max_length=20, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.request_id}: {self.cost_micro} micro-USD"
