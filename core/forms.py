"""Form fields for amounts typed in USD and kept as integer micro-USD."""
from django import forms
from django.core.exceptions import ValidationError

from core.money import MICRO_USD, AmountError, parse_usd, usd, usd_amount

# Far above any real correction or price; mostly it stops a typo's extra zeros.
MAX_ABS_MICRO = 1_000_000 * MICRO_USD


class MicroUSDField(forms.Field):
    """"12.50" becomes 12_500_000; more than six decimals is refused, never rounded."""

    widget = forms.TextInput

    def __init__(self, *, min_micro: int | None = None, max_abs_micro: int = MAX_ABS_MICRO, **kwargs):
        self.min_micro = min_micro
        self.max_abs_micro = max_abs_micro
        kwargs.setdefault("help_text", "In USD, exact to the micro-USD (six decimals), for example 12.50.")
        super().__init__(**kwargs)

    def prepare_value(self, value):
        # An int is a stored amount; anything else is what was typed, shown back as it was.
        if isinstance(value, int) and not isinstance(value, bool):
            return usd_amount(value)
        return value

    def to_python(self, value):
        value = (value or "").strip() if isinstance(value, str) else value
        if value in self.empty_values:
            return None
        if isinstance(value, int):
            return value
        try:
            micro = parse_usd(value, minimum_micro=-self.max_abs_micro, maximum_micro=self.max_abs_micro)
        except AmountError as refused:
            if refused.code == "range":
                raise ValidationError(f"At most {usd(self.max_abs_micro)} at a time.", code="too_large") from None
            if refused.code == "places":
                raise ValidationError("Amounts are exact to the micro-USD: at most six decimals.",
                                      code="too_precise") from None
            raise ValidationError("Enter an amount in USD, like 12.50 or -3.", code="invalid") from None
        if self.min_micro is not None and micro < self.min_micro:
            raise ValidationError(f"Must be at least {usd(self.min_micro)}.", code="too_small")
        return micro
