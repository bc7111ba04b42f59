"""Micro-USD amounts as the playground shows them."""


def usd(micro: int, places: int = 6) -> str:
    """"0.000123" for 123 micro-USD; `places` digits after the point (amounts are exact to 6)."""
    sign = "-" if micro < 0 else ""
    whole, rest = divmod(abs(int(micro)), 1_000_000)
    fraction = f"{rest:06d}"
    if places < 6:
        fraction = fraction[:places] + fraction[places:].rstrip("0")
    return f"{sign}{whole}.{fraction}"
