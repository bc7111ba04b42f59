"""Reconciliation: Stripe's recent events read back through the API and applied if no webhook brought them.

A webhook can be lost (an outage, a misconfigured endpoint). Events are applied oldest first through
the same event_apply as the webhook, so one already applied, by either path, changes nothing.
"""
import logging
from datetime import datetime, timedelta

import stripe
from django.utils import timezone

from billing import metrics
from billing.models import StripeEvent
from billing.stripe.client import stripe_client, stripe_configured
from billing.stripe.events import HANDLERS, event_apply, event_parse

log = logging.getLogger(__name__)

# Stripe keeps events for 30 days; a webhook lost for longer than this needs an operator anyway.
WINDOW = timedelta(days=3)


def reconcile_events(*, since: datetime | None = None, page_size: int = 100) -> dict:
    """Apply the handled events created since `since` (default: the last WINDOW) that were never applied."""
    if not stripe_configured():
        log.info("Stripe reconciliation skipped: Stripe is not configured")
        return {"fetched": 0, "applied": 0, "failed": 0, "skipped": "not configured"}
    since = since or timezone.now() - WINDOW
    try:
        page = stripe_client().v1.events.list(params={
            "created": {"gte": int(since.timestamp())}, "types": sorted(HANDLERS), "limit": page_size,
        })
        listed = [event.to_dict() for event in page.auto_paging_iter()]
    except stripe.StripeError as exc:
        log.warning("Stripe reconciliation could not list events: %s", exc)
        metrics.reconciliation_found(metrics.LIST_ERROR)
        return {"fetched": 0, "applied": 0, "failed": 0, "error": str(exc)}
    ids = [event.get("id") for event in listed]
    known = set(StripeEvent.objects.filter(event_id__in=ids).values_list("event_id", flat=True))
    applied = failed = 0
    # Stripe lists newest first; apply oldest first (a refund after the payment it refunds).
    for raw in sorted(reversed(listed), key=lambda e: e.get("created") or 0):
        if raw.get("id") in known:
            continue
        try:
            applied += event_apply(event=event_parse(raw), source="reconcile")
        except Exception:
            # One event that cannot be applied must not hold back the others; the next run retries it.
            failed += 1
            log.exception("Stripe event %s not applied by reconciliation", raw.get("id"))
    metrics.reconciliation_found(metrics.MISSED_EVENT, applied)
    metrics.reconciliation_found(metrics.FAILED_EVENT, failed)
    if applied or failed:
        log.info("Stripe reconciliation: %s events applied, %s failed", applied, failed)
    return {"fetched": len(listed), "applied": applied, "failed": failed}
