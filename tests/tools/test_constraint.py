import re

import pytest

from inference.chat.request import Tool, ToolChoice
from inference.engine.tools import tool_call_constraint
from inference.engine.types import CONSTRAINT_EBNF

from .conftest import CLOCK, TOOLS, WEATHER

REQUIRED = ToolChoice("required")
WEATHER_H = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
CLOCK_H = '<tool_call>\n{"name": "get_time", "arguments": {"offset_hours": -2}}\n</tool_call>'
WEATHER_L = '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}'
CLOCK_L = '{"name": "get_time", "parameters": {"offset_hours": -2}}'


@pytest.fixture(scope="module")
def accepts(tokenizers):
    """accepts(template, constraint, text): the grammar takes the text's tokens and is complete after them."""
    from inference.engine.grammar import GrammarCompiler

    compilers = {}

    def check(template, constraint, text):
        tok = tokenizers[template]
        if template not in compilers:
            compilers[template] = GrammarCompiler.for_tokenizer(tok, len(tok.hf_tokenizer))
        mask = compilers[template].mask_factory(constraint)()
        for token in tok.encode(text):
            allowed = mask.allowed()
            if allowed is None or not bool(allowed[token]):
                return False
            mask.accept(token)
        return mask.completed

    return check


def test_constraint_is_ebnf_for_the_engine():
    constraint = tool_call_constraint("hermes", TOOLS, REQUIRED, True)
    assert constraint.kind == CONSTRAINT_EBNF
    assert re.search(r"^root ::=", constraint.source, re.M)


@pytest.mark.parametrize("template", ["hermes", "chatml"])
def test_hermes_required_call(accepts, template):
    single = tool_call_constraint("hermes", TOOLS, REQUIRED, False)
    parallel = tool_call_constraint("hermes", TOOLS, REQUIRED, True)
    assert accepts(template, single, WEATHER_H) and accepts(template, single, CLOCK_H)
    assert not accepts(template, single, WEATHER_H + "\n" + CLOCK_H)
    assert accepts(template, parallel, WEATHER_H + "\n" + CLOCK_H + "\n" + WEATHER_H)
    assert not accepts(template, parallel, "Sure! " + WEATHER_H)
    assert not accepts(template, parallel, WEATHER_H.replace("get_weather", "get_stock"))
    assert not accepts(template, parallel, WEATHER_H.replace("celsius", "kelvin"))  # enum
    assert not accepts(template, parallel, CLOCK_H.replace("-2", "20"))  # maximum 14
    assert not accepts(template, parallel, WEATHER_H.replace(', "unit": "celsius"', ""))  # required


def test_named_call_only_allows_that_function(accepts):
    named = tool_call_constraint("hermes", TOOLS, ToolChoice("named", "get_time"), True)
    assert accepts("hermes", named, CLOCK_H)
    assert not accepts("hermes", named, WEATHER_H)
    assert not accepts("hermes", named, CLOCK_H + "\n" + CLOCK_H)  # exactly one call


def test_llama3_calls(accepts):
    parallel = tool_call_constraint("llama3", TOOLS, REQUIRED, True)
    named = tool_call_constraint("llama3", TOOLS, ToolChoice("named", "get_weather"), False)
    assert accepts("llama3", parallel, CLOCK_L + "; " + WEATHER_L)
    assert accepts("llama3", named, WEATHER_L)
    assert not accepts("llama3", named, CLOCK_L)
    assert not accepts("llama3", named, WEATHER_H)


def test_tool_objects_and_openai_dicts_give_the_same_grammar():
    objects = [Tool(t["function"]["name"], t["function"].get("description"), t["function"]["parameters"])
               for t in TOOLS]
    assert tool_call_constraint("llama3", objects, REQUIRED).source == tool_call_constraint(
        "llama3", TOOLS, REQUIRED).source


@pytest.mark.parametrize("parameters,message", [
    ({"type": "object", "properties": {"a": {"type": "nonsense"}}}, "not a valid JSON Schema"),
    ({"type": "array", "items": {"type": "integer"}}, "must describe a JSON object"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "cannot be used"),
])
def test_unusable_schemas_are_errors_naming_the_tool(parameters, message):
    tools = [WEATHER, {"type": "function", "function": {"name": "broken_tool", "parameters": parameters}}]
    with pytest.raises(ValueError, match=f"tool 'broken_tool'.*{message}"):
        tool_call_constraint("hermes", tools, REQUIRED)


@pytest.mark.parametrize("choice,message", [
    (ToolChoice("named", "get_stock"), "not among the tools"),
    (ToolChoice("auto"), "does not force a call"),
    (ToolChoice("none"), "does not force a call"),
])
def test_choices_that_cannot_be_forced_are_errors(choice, message):
    with pytest.raises(ValueError, match=message):
        tool_call_constraint("hermes", [CLOCK], choice)


def test_no_tools_is_an_error():
    with pytest.raises(ValueError, match="at least one tool"):
        tool_call_constraint("hermes", [], REQUIRED)


def test_unusual_function_names_are_quoted_correctly(accepts):
    tool = {"type": "function", "function": {"name": 'say "hi"\\now', "parameters": {"type": "object"}}}
    constraint = tool_call_constraint("hermes", [tool], REQUIRED, False)
    assert accepts("hermes", constraint, '<tool_call>\n{"name": "say \\"hi\\"\\\\now", "arguments": {}}\n</tool_call>')


def test_length_bounded_strings_take_no_raw_control_characters(accepts):
    constraint = tool_call_constraint("hermes", [WEATHER], REQUIRED, False)
    assert accepts("hermes", constraint, WEATHER_H.replace("Paris", "Par is"))
    assert not accepts("hermes", constraint, WEATHER_H.replace("Paris", "Par\x04is"))
