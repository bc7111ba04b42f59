"""The one clock of the limits: windows and caps read time here, so a test can move it.

In production it is the system clock. A test freezes it at an instant and advances it (a minute for
a rate window, a day for a spend cap) instead of sleeping; the live test server runs in the same
process, so it sees the same time.
"""
import time
from datetime import UTC, datetime

_frozen: float | None = None


def now() -> float:
    """Seconds since the epoch."""
    return time.time() if _frozen is None else _frozen


def now_utc() -> datetime:
    return datetime.fromtimestamp(now(), tz=UTC)


def freeze(at: float) -> None:
    global _frozen
    _frozen = float(at)


def advance(seconds: float) -> None:
    if _frozen is None:
        raise RuntimeError("advance() needs a frozen clock")
    freeze(_frozen + seconds)


def thaw() -> None:
    global _frozen
    _frozen = None
