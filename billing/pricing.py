"""Pure price arithmetic, in integer micro-USD."""
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True)
class Price:
    input_micro_per_mtok: int
    output_micro_per_mtok: int

    def cost_micro(self, *, prompt_tokens: int, completion_tokens: int) -> int:
        """Exact cost rounded up to the next micro-USD (never a fraction given away as a loss)."""
        numerator = prompt_tokens * self.input_micro_per_mtok + completion_tokens * self.output_micro_per_mtok
        return -(-numerator // TOKENS_PER_PRICE_UNIT)


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
