"""How durations read to an operator (amounts: core.money)."""
from datetime import timedelta


def age(delta: timedelta) -> str:
    """3d 4h, 2h 5m, 4m 10s or 12s: the two largest units are enough to see what is stuck."""
    seconds = max(int(delta.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"
