"""Tool call formats and the JSON pieces shared by parsing, prompting and constraints.

Two formats cover the models we serve:

- "hermes" (Hermes, Qwen and our fallback for templates without tool support):
  ``<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>``, one block per call.
- "llama3" (Llama 3.1/3.2 JSON tool calling): the whole answer is
  ``{"name": "f", "parameters": {...}}``, several calls separated by ``;``,
  optionally after ``<|python_tag|>``.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field

HERMES = "hermes"
LLAMA3 = "llama3"
TOOL_FORMATS = (HERMES, LLAMA3)

# What a request's tool_choice asks for.
TOOL_CHOICE_NONE = "none"
TOOL_CHOICE_AUTO = "auto"
TOOL_CHOICE_REQUIRED = "required"
TOOL_CHOICE_NAMED = "named"  # ToolChoice.name says which function

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"

_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """An OpenAI-style tool call id: "call_" and 24 random letters or digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as text
    id: str = field(default_factory=new_call_id, compare=False)


def check_format(tool_format: str) -> str:
    if tool_format not in TOOL_FORMATS:
        raise ValueError(f"unknown tool call format {tool_format!r}; expected one of {', '.join(TOOL_FORMATS)}")
    return tool_format


def dumps(value) -> str:
    """JSON the way chat templates write it (Jinja's tojson): ", " and ": " separators, UTF-8 kept."""
    return json.dumps(value, ensure_ascii=False)


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _loads(text: str):
    # strict=False: a raw control character inside a string is read (and escaped when
    # written back) rather than losing the whole call.
    return json.loads(text, parse_constant=_reject_constant, strict=False)


def call_from_json(text: str) -> ParsedCall | None:
    """A call from one JSON object naming a function, or None when it is not one.

    Accepts "arguments" (Hermes/Qwen) or "parameters" (Llama); arguments written as a
    JSON string holding an object are accepted too, since some models quote them.
    """
    try:
        obj = _loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = _loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(name=name, arguments=dumps(args))


def object_end(text: str, start: int, depth: int = 0) -> int | None:
    """Index just past the JSON object or array opening at text[start] (with `depth` 1: the one text[start] is
    inside of), or None if it is not closed yet.

    Only brackets outside strings count, so a "</tool_call>" or "}" inside a string
    value cannot end a call early. The span is not validated here.
    """
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth <= 0:
                return i + 1
    return None


def arguments_object(arguments) -> object:
    """OpenAI message arguments (a JSON string) as the object chat templates expect."""
    if isinstance(arguments, str):
        try:
            return _loads(arguments)
        except ValueError:
            return arguments
    return arguments if arguments is not None else {}
