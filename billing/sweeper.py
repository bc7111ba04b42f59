"""Holds whose request died: settled from the request's last heartbeat, or released.

A hold is stale when it is older than HOLD_STALE_AFTER_S and its request's alive entry has lapsed
(billing.liveness). Settling and releasing are the same idempotent services the request path uses,
so a request that finishes while the sweeper looks at it is still charged exactly once.
"""
import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from billing import liveness, metrics
from billing.models import Hold, UsageRecord
from billing.services import hold_release, hold_settle

log = logging.getLogger(__name__)

LOST = "lost"  # the finish_reason of a usage record the sweeper wrote


def sweep_stale_holds(*, now=None) -> dict:
    """Settle or release every stale hold; how many of each."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.HOLD_STALE_AFTER_S)
    settled = released = 0
    for hold in Hold.objects.filter(status=Hold.Status.ACTIVE, created_at__lt=cutoff).order_by("id").iterator():
        if liveness.is_alive(hold.request_id):
            continue
        counts = liveness.last_counts(hold.request_id)
        if counts is None:
            released += hold_release(hold=hold)
            log.warning("released the hold of %s: its request died before its first heartbeat", hold.request_id)
        else:
            try:
                record = hold_settle(hold=hold, prompt_tokens=hold.prompt_tokens,
                                     completion_tokens=min(int(counts["completion_tokens"]), hold.max_tokens),
                                     status=UsageRecord.Status.FAILED, finish_reason=LOST)
            except UsageRecord.DoesNotExist:  # released meanwhile by its own request path
                continue
            settled += record.finish_reason == LOST  # otherwise its request settled it first
            log.warning("settled the hold of %s from its last heartbeat (%s tokens): its request died",
                        hold.request_id, counts["completion_tokens"])
        liveness.forget(hold.request_id)
    metrics.holds_swept(settled=settled, released=released)
    return {"settled": settled, "released": released}
