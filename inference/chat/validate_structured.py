"""Validation of vLLM's structured outputs: `structured_outputs` and the older `guided_*` parameters.

    "structured_outputs": {"json": schema} | {"regex": "..."} | {"choice": ["a", "b"]} | {"grammar": "EBNF"}
                          | {"json_object": true}
    "guided_json": schema, "guided_regex": "...", "guided_choice": [...], "guided_grammar": "EBNF"

Exactly one of them per request, and not beside a `response_format` other than text. Their sources count
against the request's schema limits (schema_limits: a regex or grammar by its bytes, a choice list by its
entries and bytes) before anything compiles them; whether one compiles is decided later (inference.chat.prepare).
"""
from inference.chat.errors import invalid
from inference.chat.request import StructuredOutput
from inference.chat.schema_limits import SchemaBudget
from inference.chat.validate_fields import array, boolean, obj, only_keys, show, string
from inference.chat.validate_tools import check_schema

KINDS = ("json", "regex", "choice", "grammar", "json_object")
LEGACY = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice", "guided_grammar": "grammar"}
BACKENDS = ("auto", "xgrammar")  # guided_decoding_backend values this server honours: it has the one
# structured_outputs options that change nothing here: JSON is always compact and strict, there is no other
# backend to fall back to.
_OPTIONS = {"disable_fallback", "disable_any_whitespace", "disable_additional_properties"}
_UNSUPPORTED = {"whitespace_pattern": "JSON is always written compact, without free whitespace",
                "structural_tag": "structural tags are not supported; use 'tools' with 'tool_choice'"}


def parse_structured_outputs(body: dict, budget: SchemaBudget) -> StructuredOutput | None:
    """The request's one structured-output constraint, or None."""
    found = []
    for name, kind in LEGACY.items():
        if body.get(name) is not None:
            found.append((kind, body[name], name))
    backend = body.get("guided_decoding_backend")
    if backend is not None and backend not in BACKENDS:
        raise invalid(f"'guided_decoding_backend' must be one of {', '.join(BACKENDS)} (or null); got "
                      f"{show(backend)}: xgrammar is the only backend.", "guided_decoding_backend", "invalid_value")
    outputs = body.get("structured_outputs")
    if outputs is not None:
        obj(outputs, "structured_outputs", 'an object such as {"choice": ["yes", "no"]}')
        only_keys(outputs, "structured_outputs", {*KINDS, *_OPTIONS, *_UNSUPPORTED, "backend"})
        for key, why in _UNSUPPORTED.items():
            if outputs.get(key) is not None:
                raise invalid(f"'structured_outputs.{key}' is not supported: {why}.", f"structured_outputs.{key}",
                              "unsupported_parameter")
        for key in _OPTIONS:
            if outputs.get(key) is not None:
                boolean(outputs[key], f"structured_outputs.{key}")
        if outputs.get("backend") is not None and outputs["backend"] not in BACKENDS:
            raise invalid(f"'structured_outputs.backend' must be one of {', '.join(BACKENDS)}; got "
                          f"{show(outputs['backend'])}.", "structured_outputs.backend", "invalid_value")
        found += [(kind, outputs[kind], f"structured_outputs.{kind}") for kind in KINDS
                  if outputs.get(kind) is not None and outputs[kind] is not False]
        if not found and not any(outputs.get(kind) is False for kind in KINDS):
            raise invalid("'structured_outputs' must give one of " + ", ".join(f"'{k}'" for k in KINDS) + ".",
                          "structured_outputs", "invalid_value")
    if not found:
        return None
    if len(found) > 1:
        raise invalid(f"Give one structured output constraint; got {' and '.join(repr(p) for _, _, p in found)}.",
                      found[1][2], "invalid_value")
    kind, value, param = found[0]
    return StructuredOutput(kind, _value(kind, value, param, budget), param)


def _value(kind: str, value, param: str, budget: SchemaBudget):
    if kind == "json":
        if isinstance(value, str):  # vLLM takes the schema as JSON text too
            import json

            try:
                value = json.loads(value)
            except ValueError:
                raise invalid(f"'{param}' must be a JSON Schema, as an object or as JSON text.", param,
                              "invalid_value") from None
        return check_schema(value, param, budget)
    if kind == "json_object":
        if value is not True:
            boolean(value, param)
        return None
    if kind == "choice":
        choices = array(value, param, min_items=1, what="a non-empty array of strings")
        for i, item in enumerate(choices):
            string(item, f"{param}[{i}]", min_length=1)
        if len(set(choices)) != len(choices):
            raise invalid(f"'{param}' repeats a choice.", param, "invalid_value")
        budget.take_choices(choices, param)
        return tuple(choices)
    text = string(value, param, min_length=1)  # regex, grammar
    budget.take_text(text, param)
    return text
