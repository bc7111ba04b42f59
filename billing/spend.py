"""Per-key spend caps: the most a key may spend per UTC day, ISO week (from Monday) or calendar month.

What a key has spent in a window is the cost of its usage since the window began plus the credit its
requests in flight still hold. The cap is checked inside the transaction that places a hold, with
the key's row locked, so concurrent requests of one key are checked one after another and together
can never take it past its cap. A window ends on time: the next one starts from nothing.
"""
import math
from datetime import datetime, timedelta

from django.db.models import Sum

from accounts.models import APIKey, SpendWindow
from billing.models import Hold, UsageRecord
from core import clock

_WINDOW_NAMES = {SpendWindow.DAY: "day", SpendWindow.WEEK: "week (from Monday)", SpendWindow.MONTH: "calendar month"}


class SpendCapReached(Exception):
    def __init__(self, *, cap_micro: int, window: str, spent_micro: int, needed_micro: int, resets_at: datetime):
        self.cap_micro = cap_micro
        self.window = window
        self.spent_micro = spent_micro
        self.needed_micro = needed_micro
        self.resets_at = resets_at
        super().__init__(f"spent {spent_micro} of {cap_micro} micro-USD this {window}, needs {needed_micro}")

    @property
    def window_name(self) -> str:
        return _WINDOW_NAMES.get(self.window, self.window)

    @property
    def retry_after_s(self) -> int:
        return max(math.ceil((self.resets_at - clock.now_utc()).total_seconds()), 1)


def window_bounds(window: str, at: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the UTC calendar window containing `at`."""
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == SpendWindow.DAY:
        return day, day + timedelta(days=1)
    if window == SpendWindow.WEEK:
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if window == SpendWindow.MONTH:
        start = day.replace(day=1)
        return start, (start + timedelta(days=32)).replace(day=1)
    raise ValueError(f"unknown spend cap window {window!r}")


def spent_micro(*, api_key_id: int, since: datetime) -> int:
    """Usage cost of the key since `since`, plus what its active holds reserve."""
    used = UsageRecord.objects.filter(api_key_id=api_key_id, created_at__gte=since).aggregate(s=Sum("cost_micro"))
    held = Hold.objects.filter(api_key_id=api_key_id, status=Hold.Status.ACTIVE).aggregate(s=Sum("amount_micro"))
    return (used["s"] or 0) + (held["s"] or 0)


def spend_cap_check(*, api_key: APIKey, amount_micro: int) -> None:
    """Inside the transaction placing a hold: raise SpendCapReached if the hold would take the key past its cap.

    The key's row stays locked until that transaction ends, so the next hold of the key sees this one.
    """
    if api_key.spend_cap_micro is None:
        return
    locked = APIKey.objects.select_for_update().only("spend_cap_micro", "spend_cap_window").get(pk=api_key.pk)
    if locked.spend_cap_micro is None:
        return
    start, end = window_bounds(locked.spend_cap_window, clock.now_utc())
    spent = spent_micro(api_key_id=api_key.pk, since=start)
    if spent + amount_micro > locked.spend_cap_micro:
        raise SpendCapReached(cap_micro=locked.spend_cap_micro, window=locked.spend_cap_window, spent_micro=spent,
                              needed_micro=amount_micro, resets_at=end)
