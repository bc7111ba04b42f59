"""Grammars that force tool calls: tool_choice "required" and a named function.

The output is then exactly one call (or, for "required" with parallel calls, one
or more) in the model's own format, naming one of the offered tools, with
arguments that follow that tool's `parameters` schema. Built with xgrammar and
handed to the engine as an EBNF Constraint.
"""

from __future__ import annotations

import json
import re

from inference.engine.grammar_rules import json_safe_ebnf
from inference.engine.types import CONSTRAINT_EBNF, Constraint

from .calls import HERMES, HERMES_CLOSE, HERMES_OPEN, TOOL_CHOICE_NAMED, TOOL_CHOICE_REQUIRED, check_format, dumps

_SOURCE_PREFIX = re.compile(r"^\s*\[[\d:]+\]\s+\S+:\d+:\s*")  # "[08:16:15] /path/file.cc:83: " of xgrammar errors


# What a call looks like around its arguments, and what separates parallel calls;
# the same text the tool prompt and the model's template show.
_SHAPES = {
    HERMES: (HERMES_OPEN + '\n{{"name": {name}, "arguments": ', "}\n" + HERMES_CLOSE, "\n"),
    "llama3": ('{{"name": {name}, "parameters": ', "}", "; "),
}


def tool_call_constraint(tool_format: str, tools, choice, parallel_tool_calls: bool = True) -> Constraint:
    """The EBNF constraint for a forced tool call.

    tools: Tool objects (inference.chat.request) or OpenAI tool dicts; choice: a
    ToolChoice with mode "required" or "named" (its `name` says which function).
    Raises ValueError for other modes, an unknown named function, no tools, or a
    `parameters` schema that is not a usable JSON Schema (the message names the tool).
    """
    import xgrammar as xgr

    check_format(tool_format)
    offered = [_name_and_schema(t) for t in tools]
    if not offered:
        raise ValueError("tool_choice needs at least one tool")
    mode = getattr(choice, "mode", None)
    if mode == TOOL_CHOICE_NAMED:
        offered = [(n, s) for n, s in offered if n == choice.name]
        if not offered:
            raise ValueError(f"tool_choice names function {choice.name!r}, which is not among the tools")
        repeat = False
    elif mode == TOOL_CHOICE_REQUIRED:
        repeat = bool(parallel_tool_calls)
    else:
        raise ValueError(f"tool_choice {mode!r} does not force a call; only 'required' and a named function do")

    opening, closing, separator = _SHAPES[tool_format]
    calls = []
    for name, schema in offered:
        arguments = _schema_grammar(xgr, name, schema)
        head = xgr.Grammar.from_ebnf(f"root ::= {_literal(opening.format(name=dumps(name)))}")
        tail = xgr.Grammar.from_ebnf(f"root ::= {_literal(closing)}")
        calls.append(xgr.Grammar.concat(head, arguments, tail))
    call = calls[0] if len(calls) == 1 else xgr.Grammar.union(*calls)
    grammar = _one_or_more(xgr, call, separator) if repeat else call

    source = str(grammar)
    xgr.Grammar.from_ebnf(source)  # what the engine compiles must parse as EBNF on its own
    return Constraint(kind=CONSTRAINT_EBNF, source=source)


def _name_and_schema(tool) -> tuple[str, dict]:
    if isinstance(tool, dict):
        function = tool.get("function") or {}
        name, schema = function.get("name"), function.get("parameters")
    else:
        name, schema = tool.name, tool.parameters
    if not isinstance(name, str) or not name:
        raise ValueError("every tool needs a function name")
    if schema is None:
        schema = {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise ValueError(f"tool {name!r}: parameters must be a JSON Schema object")
    return name, schema


def _schema_grammar(xgr, name: str, schema: dict):
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"tool {name!r}: parameters is not a valid JSON Schema: {exc.message}") from None
    kind = schema.get("type")
    if kind is not None and kind != "object" and not (isinstance(kind, list) and "object" in kind):
        raise ValueError(f"tool {name!r}: parameters must describe a JSON object")
    try:
        # Compact JSON (", " and ": "), as templates write arguments.
        grammar = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
        # Length-bounded strings come out as any character but quote, backslash and line
        # breaks: raw control characters (and surrogates) would make the arguments invalid JSON.
        return xgr.Grammar.from_ebnf(json_safe_ebnf(str(grammar)))
    except Exception as exc:  # xgrammar reports unsupported schemas with several exception types
        lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        message = _SOURCE_PREFIX.sub("", lines[0]).strip()
        raise ValueError(f"tool {name!r}: parameters schema cannot be used to constrain output: {message}") from None


def _one_or_more(xgr, call, separator: str):
    """call (separator call)*, through a structural tag (plain EBNF grammars cannot be repeated)."""
    inner = str(call)
    tag = {
        "type": "structural_tag",
        "format": {"type": "sequence", "elements": [
            {"type": "grammar", "grammar": inner},
            {"type": "star", "content": {"type": "sequence", "elements": [
                {"type": "const_string", "value": separator},
                {"type": "grammar", "grammar": inner},
            ]}},
        ]},
    }
    return xgr.Grammar.from_structural_tag(json.dumps(tag))


def _literal(text: str) -> str:
    """text as an xgrammar EBNF string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
