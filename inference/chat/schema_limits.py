"""Size limits of the JSON schemas one request brings: response_format and the tools' parameters (and the
regex, grammar or choices of a structured output, by their bytes and entries).

A schema becomes a grammar, and compiling a grammar is work nobody is charged for, growing faster
than the schema (a 100,000-value enum took half a minute). So, before anything else reads them, a
request's schemas together may hold at most API_MAX_SCHEMA_BYTES bytes (as compact JSON),
API_MAX_SCHEMA_ENUM_VALUES enum values and API_MAX_SCHEMA_PROPERTIES properties, and no schema may
nest subschemas more than API_MAX_SCHEMA_DEPTH levels deep. Each is a 400 naming the limit and the
schema that crossed it. What slips through (long string bounds compile slowly too) is stopped by the
engine's compile deadline (INFERENCE_GRAMMAR_COMPILE_TIMEOUT_S).
"""
import json
from dataclasses import dataclass

from django.conf import settings

from inference.chat.errors import invalid

# Keywords whose value is a subschema, an array of subschemas or an object of subschemas.
_ONE = {"items", "additionalItems", "additionalProperties", "not", "if", "then", "else", "contains",
        "propertyNames", "unevaluatedItems", "unevaluatedProperties", "contentSchema"}
_LIST = {"items", "prefixItems", "allOf", "anyOf", "oneOf"}
_MAP = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
_WHAT = "a request's JSON schemas (response_format, structured outputs and tools' parameters together)"


def _too_large(param: str, total: int, limit: int, unit: str):
    return invalid(f"'{param}' brings {_WHAT} to {total} {unit}; at most {limit} {unit} are allowed.", param,
                   "schema_too_large")


def _measure(schema, param: str) -> tuple[int, int]:
    """(enum values, properties) of the schema, or a 400 once it nests deeper than API_MAX_SCHEMA_DEPTH."""
    limit = settings.API_MAX_SCHEMA_DEPTH
    enum_values = properties = 0
    stack = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        if depth > limit:
            raise invalid(f"'{param}' nests subschemas more than {limit} levels deep; at most {limit} levels are "
                          "allowed.", param, "schema_too_deep")
        for key, value in node.items():
            if key == "enum" and isinstance(value, list):
                enum_values += len(value)
            if key in _MAP and isinstance(value, dict):
                properties += len(value) if key == "properties" else 0
                stack.extend((sub, depth + 1) for sub in value.values())
            elif key in _LIST and isinstance(value, list):
                stack.extend((sub, depth + 1) for sub in value)
            elif key in _ONE:
                stack.append((value, depth + 1))
    return enum_values, properties


@dataclass
class SchemaBudget:
    """What the schemas of one request have used so far."""

    bytes: int = 0
    enum_values: int = 0
    properties: int = 0

    def take(self, schema, param: str) -> None:
        """Count one schema against the request's limits, or raise a 400 naming the limit it crosses."""
        enum_values, properties = _measure(schema, param)
        try:
            size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())
        except (RecursionError, ValueError):
            raise invalid(f"'{param}' could not be read as a JSON Schema (is it nested too deeply?).", param,
                          "invalid_value") from None
        self.bytes += size
        self.enum_values += enum_values
        self.properties += properties
        if self.enum_values > settings.API_MAX_SCHEMA_ENUM_VALUES:
            raise _too_large(param, self.enum_values, settings.API_MAX_SCHEMA_ENUM_VALUES, "enum values")
        if self.properties > settings.API_MAX_SCHEMA_PROPERTIES:
            raise _too_large(param, self.properties, settings.API_MAX_SCHEMA_PROPERTIES, "properties")
        if self.bytes > settings.API_MAX_SCHEMA_BYTES:
            raise _too_large(param, self.bytes, settings.API_MAX_SCHEMA_BYTES, "bytes")

    def take_text(self, text: str, param: str) -> None:
        """Count a regex or grammar by its bytes."""
        self.bytes += len(text.encode())
        if self.bytes > settings.API_MAX_SCHEMA_BYTES:
            raise _too_large(param, self.bytes, settings.API_MAX_SCHEMA_BYTES, "bytes")

    def take_choices(self, choices: list[str], param: str) -> None:
        """Count a choice list as enum values, and by its bytes."""
        self.enum_values += len(choices)
        if self.enum_values > settings.API_MAX_SCHEMA_ENUM_VALUES:
            raise _too_large(param, self.enum_values, settings.API_MAX_SCHEMA_ENUM_VALUES, "enum values")
        self.take_text("".join(choices), param)
