"""Checks of single JSON values, shared by the request validators.

Each returns the (normalised) value or raises a 400 `invalid(...)` naming the
parameter. Messages never echo large values back: `show` keeps them short.
"""
import json
import math

from core.errors import APIError
from inference.chat.errors import invalid

JSON_TYPES = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
              (list, "an array"), (dict, "an object"))


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def kind(value) -> str:
    """The JSON type of a value, for messages ("got a string")."""
    if value is None:
        return "null"
    for python_type, name in JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def show(value) -> str:
    """A short rendering of a scalar for an error message."""
    if isinstance(value, (dict, list)):
        return kind(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # e.g. an integer with more digits than Python will print
        return kind(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bounds(low, high) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    if low is not None:
        return f"at least {low:g}"
    return f"at most {high:g}"


def boolean(value, param: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"'{param}' must be a boolean; got {kind(value)}.", param, "invalid_type")
    return value


def integer(value, param: str, low: int | None = None, high: int | None = None) -> int:
    if not is_int(value):
        raise invalid(f"'{param}' must be an integer; got {show(value)}.", param, "invalid_type")
    if (low is not None and value < low) or (high is not None and value > high):
        raise invalid(f"'{param}' is {show(value)}; it must be an integer {_bounds(low, high)}.", param,
                      "invalid_value")
    return value


def number(value, param: str, low: float, high: float, *, low_exclusive: bool = False) -> float:
    if not is_number(value):
        raise invalid(f"'{param}' must be a number; got {show(value)}.", param, "invalid_type")
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(f"'{param}' must be a finite number.", param, "invalid_value")
    if value < low or value > high or (low_exclusive and value == low):
        limits = f"greater than {low:g} and at most {high:g}" if low_exclusive else _bounds(low, high)
        raise invalid(f"'{param}' is {show(value)}; it must be {limits}.", param, "invalid_value")
    return float(value)  # in range, so never too large for a float


def string(value, param: str, *, min_length: int = 0, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise invalid(f"'{param}' must be a string; got {kind(value)}.", param, "invalid_type")
    if len(value) < min_length:
        raise invalid(f"'{param}' must not be empty.", param, "invalid_value")
    if max_length is not None and len(value) > max_length:
        raise invalid(f"'{param}' must be at most {max_length} characters long.", param, "invalid_value")
    return value


def choice(value, param: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(f"'{c}'" for c in choices)
        raise invalid(f"'{param}' must be one of {listed}; got {show(value)}.", param, "invalid_value")
    return value


def obj(value, param: str, what: str = "an object") -> dict:
    if not isinstance(value, dict):
        raise invalid(f"'{param}' must be {what}; got {kind(value)}.", param, "invalid_type")
    return value


def array(value, param: str, *, min_items: int = 0, max_items: int | None = None, what: str = "an array") -> list:
    if not isinstance(value, list):
        raise invalid(f"'{param}' must be {what}; got {kind(value)}.", param, "invalid_type")
    if len(value) < min_items:
        raise invalid(f"'{param}' must not be empty.", param, "empty_array")
    if max_items is not None and len(value) > max_items:
        raise invalid(f"'{param}' may hold at most {max_items} items; got {len(value)}.", param,
                      "array_above_max_length")
    return value


def missing(param: str) -> APIError:
    return invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def only_keys(value: dict, where: str, allowed) -> None:
    """Refuse fields the object does not define (OpenAI does the same)."""
    for key in value:
        if key not in allowed:
            param = f"{where}.{key}"
            raise invalid(f"Unrecognized argument supplied: '{param}'.", param, "unknown_parameter")

