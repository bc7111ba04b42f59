"""Ranges of UTC days that usage reports read, bounded so that no day arithmetic leaves the calendar.

GET /api/billing/usage, the usage page and its CSV all read their days through `day_range`, so they accept
and refuse the same ranges. Python's dates end at 0001-01-01 and 9999-12-31: a report of the last day needs
the next midnight, a default range reaches back 29 days, so a day past these bounds would be a 500.
"""
from datetime import date, timedelta

FIRST_DAY = date(1970, 1, 1)  # before any usage: timestamps on the API start here
LAST_DAY = date(2999, 12, 31)
MAX_DAYS = 366
DEFAULT_DAYS = 30


class DayRangeError(ValueError):
    """`field` ("start" or "end") is refused; `code` is "bounds", "order" or "span"."""

    def __init__(self, field: str, code: str, message: str):
        super().__init__(message)
        self.field, self.code = field, code


def day_range(start: date | None, end: date | None, *, today: date) -> tuple[date, date]:
    """(first day, last day), both included: `end` defaults to today (or `start` if later), `start` to
    DEFAULT_DAYS days ending at `end` (never before FIRST_DAY). Raises DayRangeError."""
    for field, day in (("start", start), ("end", end)):
        if day is not None and not FIRST_DAY <= day <= LAST_DAY:
            raise DayRangeError(field, "bounds", f"must be a day from {FIRST_DAY} to {LAST_DAY}.")
    end = end or max(today, start or today)
    start = start or max(FIRST_DAY, end - timedelta(days=DEFAULT_DAYS - 1))
    if end < start:
        raise DayRangeError("end", "order", "must be on or after start.")
    if (end - start).days + 1 > MAX_DAYS:
        raise DayRangeError("start", "span", f"the range may span at most {MAX_DAYS} days.")
    return start, end
