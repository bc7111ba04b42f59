"""Pure money arithmetic in integer micro-USD, and how amounts read as text."""
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

TOKENS_PER_PRICE_UNIT = 1_000_000
MICRO_USD = 1_000_000
MICRO_PER_CENT = MICRO_USD // 100


@dataclass(frozen=True)
class Price:
    input_micro_per_mtok: int
    output_micro_per_mtok: int
    # Prompt tokens served from the prefix cache cost less to serve. None: half the input price.
    cached_input_micro_per_mtok: int | None = None

    def __post_init__(self):
        if self.cached_input_micro_per_mtok is None:
            object.__setattr__(self, "cached_input_micro_per_mtok", self.input_micro_per_mtok // 2)

    def cost_micro(self, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """Exact cost rounded up to the next micro-USD (never a fraction given away as a loss).

        `cached_tokens` of the prompt tokens are charged the cached input price, the rest the input price;
        the sum is rounded once, so splitting a prompt never adds a micro-USD.
        """
        if not 0 <= cached_tokens <= prompt_tokens:
            raise ValueError(f"cached_tokens must be within 0..{prompt_tokens} (the prompt), not {cached_tokens}")
        numerator = ((prompt_tokens - cached_tokens) * self.input_micro_per_mtok
                     + cached_tokens * self.cached_input_micro_per_mtok
                     + completion_tokens * self.output_micro_per_mtok)
        return -(-numerator // TOKENS_PER_PRICE_UNIT)


def cached_within(cached_tokens: int | None, prompt_tokens: int) -> int:
    """A reported cached count brought within 0..prompt_tokens: a faulty report must not cost a 500 or money."""
    return min(max(cached_tokens or 0, 0), max(prompt_tokens, 0))


def usd_to_micro(usd: str | float | int) -> int:
    try:
        amount = Decimal(str(usd)) * 1_000_000
    except InvalidOperation:
        raise ValueError(f"{usd!r} is not an amount in USD") from None
    if not amount.is_finite():
        raise ValueError(f"{usd!r} is not an amount in USD")
    if amount != amount.to_integral_value():
        raise ValueError(f"{usd!r} has more precision than one micro-USD")
    return int(amount)


def _parts(micro: int) -> tuple[str, int, str]:
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO_USD)
    return sign, whole, f"{fraction:06d}".rstrip("0").ljust(2, "0")


def usd(micro: int) -> str:
    """$1,234.50, or $0.000123: always the cents, more digits only where the micro-USD need them."""
    sign, whole, fraction = _parts(micro)
    return f"{sign}${whole:,}.{fraction}"


def usd_amount(micro: int) -> str:
    """1234.50: the same exact amount as `usd`, as a person types it and as the API writes it."""
    sign, whole, fraction = _parts(micro)
    return f"{sign}{whole}.{fraction}"


def usd_exact(micro: int) -> str:
    """1234.500000: six decimals always, so a column lines up and sums exactly."""
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO_USD)
    return f"{sign}{whole}.{fraction:06d}"


def cents_to_micro(cents: int) -> int:
    return cents * MICRO_PER_CENT
