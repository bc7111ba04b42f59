"""Money on the wire: exact USD strings both ways, and serializers that refuse fields they do not know.

Amounts are integer micro-USD inside; a client writes and reads USD as decimal strings ("25.00"), so no
amount ever passes through a binary float.
"""
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.money import MAX_MICRO, AmountError, cents_to_micro, parse_usd
from core.money import usd_amount as usd  # exact USD strings ("25.00", "1.234567") on the wire


def cents_usd(cents: int) -> str:
    return usd(cents_to_micro(cents))


USD_STRING = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2,6}$", "example": "25.00",
              "description": "USD as an exact decimal string."}


@extend_schema_field(USD_STRING)
class USDReadField(serializers.ReadOnlyField):
    """A micro-USD attribute shown as a USD string."""

    def to_representation(self, value):
        return usd(value)


class USDField(serializers.Field):
    """A USD amount written as a decimal string (a JSON number is taken too), held as micro-USD."""

    default_error_messages = {
        "invalid": 'must be an amount in USD as a decimal string, e.g. "25.00".',
        "places": "must have at most {places} decimal places.",
        "range": "must be between {low} and {high} USD.",
    }

    def __init__(self, *, places: int = 6, minimum_micro: int = 0, maximum_micro: int = MAX_MICRO, **kwargs):
        self.places = places
        self.minimum_micro = minimum_micro
        self.maximum_micro = maximum_micro
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> int:
        try:
            return parse_usd(data, places=self.places, minimum_micro=self.minimum_micro,
                             maximum_micro=self.maximum_micro)
        except AmountError as refused:
            if refused.code == "range":
                self.fail("range", low=usd(self.minimum_micro), high=usd(self.maximum_micro))
            self.fail(refused.code, places=self.places)

    def to_representation(self, value):
        return usd(value)


class USDFieldSchema(OpenApiSerializerFieldExtension):
    target_class = USDField

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        return {**USD_STRING, "pattern": rf"^[0-9]+(\.[0-9]{{1,{field.places}}})?$",
                "description": f"USD as a decimal string, {usd(field.minimum_micro)} to {usd(field.maximum_micro)}."}


class StrictSerializer(serializers.Serializer):
    """Refuses a field it does not know (a typo must not pass as a no-op) and names it in the error."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = [name for name, field in self.fields.items() if not field.read_only]
            unknown = sorted(set(data) - set(writable), key=str)
            if unknown:
                raise serializers.ValidationError(
                    {str(unknown[0]): [f"unknown or read-only field; it may be one of: {', '.join(writable)}."]})
        return super().to_internal_value(data)


class WholeNumberField(serializers.IntegerField):
    """An integer that is a JSON integer: not "5", not 5.0, not true."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class JSONBooleanField(serializers.BooleanField):
    """true or false, not "yes" or 1."""

    default_error_messages = {"invalid": "must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data
