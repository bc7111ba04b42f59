"""Pure money arithmetic in integer micro-USD, and how amounts read as text (shared by every app)."""
import re
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


MAX_USD = 1_000_000_000  # far above any real amount, far below a 64-bit column of micro-USD (9.2e12 USD)
MAX_MICRO = MAX_USD * MICRO_USD
MAX_AMOUNT_CHARS = 40
# Plain decimal notation with an optional exponent: no NaN or Infinity, no "1_000", no non-ASCII digits.
_AMOUNT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class AmountError(ValueError):
    """Why a value is not an amount: `code` is "invalid" (not a number), "range" (out of bounds) or "places"."""

    def __init__(self, code: str, message: str, **params):
        super().__init__(message)
        self.code, self.params = code, params


def _usd_of(micro: int) -> Decimal:
    return Decimal(micro).scaleb(-6)


def parse_usd(value, *, places: int = 6, minimum_micro: int = 0, maximum_micro: int = MAX_MICRO) -> int:
    """USD as typed ("12.50", "1e3", 12.5) as exact micro-USD within the bounds; never rounded.

    The one reader of amounts for the API, the dashboard, the admin and the commands. The bounds are checked
    by exact comparison before any arithmetic, so "1e999999" or "1e-999999" is a refusal, never a
    decimal.Overflow, and no amount can overflow a 64-bit column.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise AmountError("invalid", "is not an amount in USD")
    text = str(value).strip()
    if len(text) > MAX_AMOUNT_CHARS:
        raise AmountError("invalid", f"is not an amount in USD (over {MAX_AMOUNT_CHARS} characters)")
    if not _AMOUNT.fullmatch(text):
        raise AmountError("invalid", "is not an amount in USD")
    try:
        amount = Decimal(text)
    except InvalidOperation:  # an exponent past what a Decimal holds
        raise AmountError("invalid", "is not an amount in USD") from None
    low, high = _usd_of(minimum_micro), _usd_of(maximum_micro)
    if not low <= amount <= high:
        raise AmountError("range", f"must be between {usd_amount(minimum_micro)} and {usd_amount(maximum_micro)} USD",
                          low=minimum_micro, high=maximum_micro)
    # Within the bounds an amount has at most 16 digits before its places: quantize and scaleb are exact.
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise AmountError("places", f"must have at most {places} decimal places", places=places)
    return int(amount.scaleb(6))


def usd_to_micro(usd: str | float | int) -> int:
    """A signed amount (a price, a grant) as exact micro-USD; ValueError (an AmountError) when it is not one."""
    return parse_usd(usd, minimum_micro=-MAX_MICRO)


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
