"""Validation of `tools`, `tool_choice` and `response_format`.

JSON Schemas (tool parameters, response schemas) are checked against the size
limits of `schema_limits` first, then the Draft 2020-12 meta-schema; whether the
grammar engine can compile one is decided later, per model.
"""
import re

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from inference.chat.errors import invalid
from inference.chat.request import (TOOL_CHOICE_AUTO, TOOL_CHOICE_NAMED, TOOL_CHOICE_NONE, TOOL_CHOICE_REQUIRED,
                                   ResponseFormat, Tool, ToolChoice)
from inference.chat.schema_limits import SchemaBudget
from inference.chat.validate_fields import array, boolean, missing, obj, only_keys, show, string

MAX_TOOLS = 128
NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
DEFAULT_PARAMETERS = {"type": "object", "properties": {}}
TOOL_CHOICE_MODES = (TOOL_CHOICE_NONE, TOOL_CHOICE_AUTO, TOOL_CHOICE_REQUIRED)
RESPONSE_FORMATS = ("text", "json_object", "json_schema")


def check_schema(schema, param: str, budget: SchemaBudget) -> dict:
    """A JSON Schema object within the request's schema limits that the Draft 2020-12 meta-schema accepts."""
    obj(schema, param, "a JSON Schema object")
    budget.take(schema, param)
    try:
        # Structure only: "pattern" regexes are ECMA-262, which Python's re would wrongly refuse.
        Draft202012Validator.check_schema(schema, format_checker=None)
    except SchemaError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        detail = exc.message if len(exc.message) <= 200 else exc.message[:197] + "..."
        at = f" at '{param}{where}'" if where else ""
        raise invalid(f"'{param}' is not a valid JSON Schema{at}: {detail}", param, "invalid_value") from None
    except (RecursionError, ValueError, TypeError, LookupError):
        raise invalid(f"'{param}' could not be checked as a JSON Schema (is it nested too deeply?).", param,
                      "invalid_value") from None
    return schema


def _name(value, param: str) -> str:
    if value is None:
        raise missing(param)
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise invalid(f"'{param}' must be 1 to 64 characters from a-z, A-Z, 0-9, '_' and '-'; got {show(value)}.",
                      param, "invalid_value")
    return value


def parse_tools(value, budget: SchemaBudget | None = None) -> tuple[Tool, ...]:
    array(value, "tools", max_items=MAX_TOOLS, what="an array of tool objects")
    budget = budget or SchemaBudget()
    tools, seen = [], set()
    for i, tool in enumerate(value):
        at = f"tools[{i}]"
        obj(tool, at, "a tool object such as {\"type\": \"function\", \"function\": {...}}")
        only_keys(tool, at, {"type", "function"})
        if tool.get("type") is None:
            raise missing(f"{at}.type")
        if tool["type"] != "function":
            raise invalid(f"'{at}.type' must be 'function'; only function tools are supported.", f"{at}.type",
                          "invalid_value")
        if tool.get("function") is None:
            raise missing(f"{at}.function")
        function = obj(tool["function"], f"{at}.function")
        only_keys(function, f"{at}.function", {"name", "description", "parameters", "strict"})
        name = _name(function.get("name"), f"{at}.function.name")
        if name in seen:
            raise invalid(f"'{at}.function.name': the tool name '{name}' is declared twice; tool names must be "
                          "unique.", f"{at}.function.name", "invalid_value")
        seen.add(name)
        description = function.get("description")
        if description is not None:
            string(description, f"{at}.function.description")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = dict(DEFAULT_PARAMETERS, properties={})
        else:
            param = f"{at}.function.parameters"
            check_schema(parameters, param, budget)
            if parameters.get("type", "object") != "object":
                raise invalid(f"'{param}' must be a JSON Schema of type 'object'; got type "
                              f"{show(parameters['type'])}.", param, "invalid_value")
        strict = function.get("strict")
        strict = False if strict is None else boolean(strict, f"{at}.function.strict")
        tools.append(Tool(name=name, description=description, parameters=parameters, strict=strict))
    return tuple(tools)


def parse_tool_choice(value, tools: tuple[Tool, ...]) -> ToolChoice:
    if value is None:
        return ToolChoice(TOOL_CHOICE_AUTO if tools else TOOL_CHOICE_NONE)
    if isinstance(value, str):
        if value not in TOOL_CHOICE_MODES:
            raise invalid(f"'tool_choice' must be 'none', 'auto', 'required' or {{\"type\": \"function\", "
                          f"\"function\": {{\"name\": ...}}}}; got {show(value)}.", "tool_choice", "invalid_value")
        choice = ToolChoice(value)
    else:
        obj(value, "tool_choice", "'none', 'auto', 'required' or a named function object")
        only_keys(value, "tool_choice", {"type", "function"})
        if value.get("type") is None:
            raise missing("tool_choice.type")
        if value["type"] != "function":
            raise invalid(f"'tool_choice.type' must be 'function'; got {show(value['type'])}.", "tool_choice.type",
                          "invalid_value")
        if value.get("function") is None:
            raise missing("tool_choice.function")
        function = obj(value["function"], "tool_choice.function")
        only_keys(function, "tool_choice.function", {"name"})
        name = _name(function.get("name"), "tool_choice.function.name")
        if tools and name not in {tool.name for tool in tools}:
            raise invalid(f"'tool_choice.function.name' names '{name}', which is not one of the declared tools.",
                          "tool_choice.function.name", "invalid_value")
        choice = ToolChoice(TOOL_CHOICE_NAMED, name)
    if choice.mode != TOOL_CHOICE_NONE and not tools:
        raise invalid("'tool_choice' is only allowed when 'tools' are given (or it is 'none').", "tool_choice",
                      "invalid_value")
    return choice


def parse_response_format(value, budget: SchemaBudget | None = None) -> ResponseFormat:
    if value is None:
        return ResponseFormat()
    obj(value, "response_format", "an object such as {\"type\": \"json_object\"}")
    kind = value.get("type")
    if kind is None:
        raise missing("response_format.type")
    if kind not in RESPONSE_FORMATS:
        raise invalid(f"'response_format.type' must be 'text', 'json_object' or 'json_schema'; got {show(kind)}.",
                      "response_format.type", "invalid_value")
    if kind != "json_schema":
        only_keys(value, "response_format", {"type"})
        return ResponseFormat(type=kind)
    only_keys(value, "response_format", {"type", "json_schema"})
    if value.get("json_schema") is None:
        raise missing("response_format.json_schema")
    spec = obj(value["json_schema"], "response_format.json_schema")
    only_keys(spec, "response_format.json_schema", {"name", "description", "schema", "strict"})
    name = _name(spec.get("name"), "response_format.json_schema.name")
    if spec.get("description") is not None:
        string(spec["description"], "response_format.json_schema.description")
    if spec.get("schema") is None:
        raise missing("response_format.json_schema.schema")
    schema = check_schema(spec["schema"], "response_format.json_schema.schema", budget or SchemaBudget())
    strict = spec.get("strict")
    strict = False if strict is None else boolean(strict, "response_format.json_schema.strict")
    return ResponseFormat(type="json_schema", schema=schema, name=name, strict=strict)
