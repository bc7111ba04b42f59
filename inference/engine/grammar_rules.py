"""What a constraint's source must be, before and while xgrammar compiles it (no tokenizer needed).

`check_constraint` runs in the API process before any credit is held; `compile_with` is the one compile
call, used in the engine's thread and in the compile child process (grammar_process). Importing this
module is cheap: xgrammar (and torch) are imported by the first check or compile.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache

from .types import CONSTRAINT_EBNF, CONSTRAINT_JSON_SCHEMA, Constraint

ERROR_INVALID_GRAMMAR = "invalid_grammar"  # TokenEvent.error_code of a constraint that does not compile
MAX_MESSAGE = 300

# Compact separators and strict mode: no free whitespace a small model could
# loop on, no properties the schema does not name.
_JSON_OPTIONS = dict(any_whitespace=False, strict_mode=True)
_JSON_OBJECT_SCHEMA = '{"type": "object"}'
# "[08:16:15] /path/file.cc:83: " and "Check failed: (cond) is false: " prefixes of xgrammar's errors.
_LOG_PREFIX = re.compile(r"^\s*\[[\d:]+\]\s+\S+:\d+:\s*")
_CHECK_PREFIX = re.compile(r"^Check failed: .*? is false:\s*")


# A negated character class, as xgrammar prints it ("[^\"\\\r\n]", "[^\0-\x1f\"\\]"...).
_NEGATED_CLASS = re.compile(r"\[\^((?:\\.|[^\]\\])*)\]")
# What a JSON string may hold raw: no quote, backslash or control character, and no UTF-16
# surrogate, which xgrammar would let a byte-level model spell as three invalid UTF-8 bytes.
JSON_STRING_CHAR = r'[^\0-\x1f\"\\\ud800-\udfff]'


def json_safe_ebnf(ebnf: str) -> str:
    """The grammar with every "any character but quote and backslash" class tightened to JSON_STRING_CHAR."""

    def tighten(match: re.Match) -> str:
        inner = match.group(1)
        return JSON_STRING_CHAR if '\\"' in inner and "\\\\" in inner else match.group(0)

    return _NEGATED_CLASS.sub(tighten, ebnf)


def json_schema_grammar(source: str):
    """The xgrammar Grammar of a JSON schema (compact, strict), with JSON-safe string characters."""
    import xgrammar as xgr

    grammar = xgr.Grammar.from_json_schema(source, **_JSON_OPTIONS)
    return xgr.Grammar.from_ebnf(json_safe_ebnf(str(grammar)), root_rule_name="root")


class GrammarError(ValueError):
    """A constraint xgrammar cannot compile; the message says why, for the client."""


class CompileTimeout(GrammarError):
    """A constraint whose compile ran past its deadline (grammar_process); kept in the cache as such."""


class InvalidGrammar:
    """Stands in for a request's token_mask_factory when its constraint did not compile:
    the engine ends such a request at once with error_code "invalid_grammar"."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __call__(self):
        raise GrammarError(self.message)


def json_schema_constraint(schema: dict) -> Constraint:
    """The constraint for OpenAI's response_format {"type": "json_schema"}: output follows `schema`."""
    return Constraint(CONSTRAINT_JSON_SCHEMA, json.dumps(schema, separators=(",", ":"), ensure_ascii=False))


def json_object_constraint() -> Constraint:
    """The constraint for OpenAI's response_format {"type": "json_object"}: any JSON object."""
    return Constraint(CONSTRAINT_JSON_SCHEMA, _JSON_OBJECT_SCHEMA)


def regex_constraint(pattern: str) -> Constraint:
    """The constraint for vLLM's structured_outputs.regex: the whole output matches `pattern` (xgrammar's regex
    dialect), as the EBNF grammar xgrammar makes of it; GrammarError when it is not a regex xgrammar reads."""
    import xgrammar as xgr

    try:
        grammar = xgr.Grammar.from_regex(pattern)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise GrammarError(_describe("regex", exc)) from None
    return Constraint(CONSTRAINT_EBNF, str(grammar))


def choice_constraint(choices) -> Constraint:
    """The constraint for vLLM's structured_outputs.choice: the output is exactly one of `choices`."""
    return Constraint(CONSTRAINT_EBNF, "root ::= " + " | ".join(_literal(choice) for choice in choices))


def _literal(text: str) -> str:
    """An EBNF string literal of `text`: quote and backslash escaped, control characters as \\uXXXX."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def check_constraint(constraint: Constraint) -> None:
    """Raise ValueError (a GrammarError) naming the problem if `constraint` cannot be compiled.

    Tokenizer-free and cached, so the API process can afford it on every request.
    """
    error = _check(constraint.kind, constraint.source)
    if error is not None:
        raise GrammarError(error)


@lru_cache(maxsize=256)
def _check(kind: str, source: str) -> str | None:
    import xgrammar as xgr

    try:
        if kind == CONSTRAINT_JSON_SCHEMA:
            _parse_schema(source)
            json_schema_grammar(source)
        elif kind == CONSTRAINT_EBNF:
            xgr.Grammar.from_ebnf(source, root_rule_name="root")
        else:
            return f"unknown constraint kind {kind!r}"
    except GrammarError as exc:
        return str(exc)
    except (RuntimeError, ValueError, TypeError) as exc:
        return _describe(kind, exc)
    return None


def _parse_schema(source: str) -> None:
    try:
        schema = json.loads(source)
    except ValueError as exc:
        raise GrammarError(f"the JSON schema is not valid JSON: {exc}") from None
    if not isinstance(schema, (dict, bool)):
        raise GrammarError(f"a JSON schema must be an object, not {type(schema).__name__}")


def compile_with(compiler, kind: str, source: str):
    """The CompiledGrammar of (kind, source) from an xgrammar GrammarCompiler, or GrammarError saying why not."""
    try:
        if kind == CONSTRAINT_JSON_SCHEMA:
            _parse_schema(source)
            return compiler.compile_grammar(json_schema_grammar(source))
        return compiler.compile_grammar(source, root_rule_name="root")
    except GrammarError:
        raise
    except (RuntimeError, ValueError, TypeError) as exc:
        raise GrammarError(_describe(kind, exc)) from None


def _describe(kind: str, exc: Exception) -> str:
    """xgrammar's message without its source location, cut to a readable length."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    message = _CHECK_PREFIX.sub("", _LOG_PREFIX.sub("", lines[0] if lines else "")).strip()
    message = message.split(" The JSON string is:")[0].strip()  # the parse error repeats the whole input
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    what = {CONSTRAINT_JSON_SCHEMA: "JSON schema", "regex": "regex"}.get(kind, "grammar")
    return f"invalid {what}: {message or type(exc).__name__}"
