"""How money and time read to an operator: USD with cents on the page, exact decimals in CSV and forms."""
from datetime import timedelta

from billing.models import MICRO_USD

CENT_MICRO = MICRO_USD // 100


def _parts(micro: int) -> tuple[str, int, str]:
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO_USD)
    return sign, whole, f"{fraction:06d}".rstrip("0").ljust(2, "0")


def usd(micro: int) -> str:
    """$1,234.50, or $0.000123: always the cents, more digits only where the micro-USD need them."""
    sign, whole, fraction = _parts(micro)
    return f"{sign}${whole:,}.{fraction}"


def usd_input(micro: int) -> str:
    """1234.50: the same exact amount as `usd`, as a person would type it into a form."""
    sign, whole, fraction = _parts(micro)
    return f"{sign}{whole}.{fraction}"


def usd_exact(micro: int) -> str:
    """1234.500000: six decimals always, so a spreadsheet column lines up and sums exactly."""
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO_USD)
    return f"{sign}{whole}.{fraction:06d}"


def cents_to_micro(cents: int) -> int:
    return cents * CENT_MICRO


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
