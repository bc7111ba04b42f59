"""Holds whose request died: settled from the request's final count or its last heartbeat, or released.

First, every active hold whose request has a final count (billing.final_counts: the inference workers record
one as a request ends, and the process following the request drops it once it has read it) is settled from it,
as its own request path would have: prompt, cached and generated tokens, by its finish reason. Such a hold
belongs to a request that ended after the process that would have settled it died.

Otherwise a hold is stale when it is older than HOLD_STALE_AFTER_S and its request's alive entry has lapsed
(billing.liveness): it is settled from the tokens of the request's last heartbeat, or released. Settling and
releasing are the same idempotent services the request path uses, so a request that finishes while the
sweeper looks at it is still charged exactly once.
"""
import logging
from datetime import timedelta
from itertools import islice

from django.conf import settings
from django.utils import timezone

from billing import final_counts, liveness, metrics
from billing.models import Hold, UsageRecord
from billing.services import HoldReleased, hold_release, hold_settle

log = logging.getLogger(__name__)

LOST = "lost"  # the finish_reason of a usage record the sweeper wrote from a heartbeat
BATCH = 500  # holds looked up in the final count sources at once


def sweep_stale_holds(*, now=None) -> dict:
    """Settle or release every hold whose request died; how many of each."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.HOLD_STALE_AFTER_S)
    settled = released = 0
    holds = Hold.objects.filter(status=Hold.Status.ACTIVE).order_by("id").iterator(chunk_size=BATCH)
    while batch := list(islice(holds, BATCH)):
        finals = final_counts.lookup([hold.request_id for hold in batch])
        for hold in batch:
            final = finals.get(hold.request_id)
            if final is not None:
                settled += _settle_final(hold, final)
            elif hold.created_at < cutoff and not liveness.is_alive(hold.request_id):
                outcome = _settle_lost(hold)
                if outcome is None:
                    continue
                settled += outcome == "settled"
                released += outcome == "released"
            else:
                continue
            liveness.forget(hold.request_id)
    metrics.holds_swept(settled=settled, released=released)
    return {"settled": settled, "released": released}


def _settle_final(hold: Hold, final: final_counts.FinalCount) -> bool:
    """Charge the request's final count; False when its own request path settled or released it first."""
    before = timezone.now()
    ended_ms = final.finished_at_ms or before.timestamp() * 1000
    try:
        record = hold_settle(hold=hold, prompt_tokens=final.prompt_tokens,
                             completion_tokens=min(final.completion_tokens, hold.max_tokens),
                             cached_tokens=final.cached_tokens, status=final.status,
                             finish_reason=final.finish_reason,
                             latency_ms=max(0, round(ended_ms - hold.created_at.timestamp() * 1000)))
    except HoldReleased:  # released meanwhile by its own request path
        return False
    ours = record.created_at >= before
    if ours:
        log.warning("settled the hold of %s from its final count (%s prompt, %s cached, %s generated tokens, %s): "
                    "the process following it died", hold.request_id, final.prompt_tokens, final.cached_tokens,
                    final.completion_tokens, final.finish_reason or "no finish reason")
    return ours


def _settle_lost(hold: Hold) -> str | None:
    """Settle a dead request's hold from its last heartbeat, or release it: "settled", "released", or "" when
    its request path closed it first; None when it was closed meanwhile without a record."""
    counts = liveness.last_counts(hold.request_id)
    if counts is None:
        if hold_release(hold=hold):
            log.warning("released the hold of %s: its request died before its first heartbeat", hold.request_id)
            return "released"
        return ""
    try:
        record = hold_settle(hold=hold, prompt_tokens=hold.prompt_tokens,
                             completion_tokens=min(int(counts["completion_tokens"]), hold.max_tokens),
                             status=UsageRecord.Status.FAILED, finish_reason=LOST)
    except HoldReleased:  # released meanwhile by its own request path
        return None
    log.warning("settled the hold of %s from its last heartbeat (%s tokens): its request died",
                hold.request_id, counts["completion_tokens"])
    return "settled" if record.finish_reason == LOST else ""  # otherwise its request settled it first
