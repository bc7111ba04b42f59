import json

import pytest

from inference.engine.tools import ParsedCall, parse_tool_calls

HERMES_ONE = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
HERMES_TWO = HERMES_ONE + '\n<tool_call>\n{"name": "get_time", "arguments": {"offset_hours": 2}}\n</tool_call>'


def calls(*pairs):
    return [ParsedCall(name, json.dumps(args)) for name, args in pairs]


def test_hermes_single_call_has_no_content():
    content, found = parse_tool_calls("hermes", HERMES_ONE)
    assert content is None
    assert found == calls(("get_weather", {"city": "Paris", "unit": "celsius"}))
    assert json.loads(found[0].arguments) == {"city": "Paris", "unit": "celsius"}


def test_hermes_text_before_several_calls_is_content():
    content, found = parse_tool_calls("hermes", "Let me check both.\n\n" + HERMES_TWO + "\n")
    assert content == "Let me check both."
    assert [c.name for c in found] == ["get_weather", "get_time"]
    assert json.loads(found[1].arguments) == {"offset_hours": 2}


def test_hermes_closing_tag_inside_a_string_does_not_end_the_call():
    text = '<tool_call>{"name": "echo", "arguments": {"text": "a </tool_call> b"}}</tool_call>'
    assert parse_tool_calls("hermes", text) == (None, calls(("echo", {"text": "a </tool_call> b"})))


def test_hermes_call_without_closing_tag_at_the_end_still_counts():
    text = '<tool_call>\n{"name": "get_time", "arguments": {"offset_hours": 0}}\n'
    assert parse_tool_calls("hermes", text) == (None, calls(("get_time", {"offset_hours": 0})))


def test_hermes_arguments_given_as_a_json_string_are_accepted():
    text = '<tool_call>{"name": "get_time", "arguments": "{\\"offset_hours\\": 1}"}</tool_call>'
    assert parse_tool_calls("hermes", text)[1] == calls(("get_time", {"offset_hours": 1}))


@pytest.mark.parametrize("text", [
    "Just an answer, no tools needed.",
    "<tool_call>\nnot json\n</tool_call>",
    '<tool_call>{"arguments": {"a": 1}, "name": "f"</tool_call>',  # unbalanced, name last: never a call
    '<tool_call>{"arguments": {}}</tool_call>',  # no name
    '<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>',  # arguments not an object
    '<tool_call>{"arguments": {"x": NaN}, "name": "f"}</tool_call>',
    "I would use <tool_call> here but I won't.",
    "Ends with a partial tag <tool_ca",
    "  leading and trailing whitespace is kept  \n",
])
def test_hermes_text_that_is_not_a_call_stays_content_unchanged(text):
    assert parse_tool_calls("hermes", text) == (text, [])


@pytest.mark.parametrize("text, name, arguments", [
    # Cut off by max_tokens: the call keeps the arguments it has, as OpenAI's do (finish_reason "length").
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', "get_weather", '{"city": "Par'),
    ('<tool_call>{"name": "f", "arguments": {"a": 1</tool_call>', "f", '{"a": 1'),  # a brace skipped
    ('<tool_call>{"name": "f", "arguments": {"x": NaN}}</tool_call>', "f", '{"x": NaN}'),  # as written
    ('<tool_call>{"name":"f","arguments":{"a":1}}</tool_call>', "f", '{"a":1}'),  # compact, as written
    ('<tool_call>{"name": "f", "arguments": {"a": 1}</tool_call>', "f", '{"a": 1}'),  # the call's brace missing
    ('<tool_call>{"name": "f", "arguments": {"a": 1}, "id": 7}</tool_call>', "f", '{"a": 1}'),  # more keys
    ('<tool_call>{"arguments": {"a":1}, "name": "f"}</tool_call>', "f", '{"a": 1}'),  # name last: read whole
])
def test_hermes_a_call_naming_its_function_first_is_a_call_from_its_arguments_on(text, name, arguments):
    content, found = parse_tool_calls("hermes", text)
    assert content is None and [(c.name, c.arguments) for c in found] == [(name, arguments)]


def test_llama3_a_call_cut_off_keeps_its_arguments():
    content, found = parse_tool_calls("llama3", '{"name": "get_time", "parameters": {"offset_hours": 3')
    assert content is None and [(c.name, c.arguments) for c in found] == [("get_time", '{"offset_hours": 3')]
    content, found = parse_tool_calls("llama3", '{"name": "get_time", "parameters": {"offset_hours": 3}')
    assert [(c.name, c.arguments) for c in found] == [("get_time", '{"offset_hours": 3}')]


def test_hermes_garbage_tag_before_a_real_call_stays_content():
    text = "<tool_call> oops " + HERMES_ONE
    content, found = parse_tool_calls("hermes", text)
    assert content == "<tool_call> oops"
    assert [c.name for c in found] == ["get_weather"]


def test_hermes_text_between_and_after_calls_is_joined_content():
    content, found = parse_tool_calls("hermes", "First. " + HERMES_ONE + " Then. " + HERMES_ONE + "  Done.  ")
    assert content == "First.\nThen.\nDone."
    assert len(found) == 2


def test_empty_output_has_no_content():
    assert parse_tool_calls("hermes", "") == (None, [])
    assert parse_tool_calls("llama3", "") == (None, [])


def test_llama3_single_call():
    text = '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}'
    assert parse_tool_calls("llama3", text) == (None, calls(("get_weather", {"city": "Oslo", "unit": "celsius"})))


def test_llama3_python_tag_and_several_calls_separated_by_semicolons():
    text = ('<|python_tag|>{"name": "get_time", "parameters": {"offset_hours": 1}}; '
            '{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}};')
    content, found = parse_tool_calls("llama3", text)
    assert content is None
    assert found == calls(("get_time", {"offset_hours": 1}), ("get_weather", {"city": "Rome", "unit": "celsius"}))


def test_llama3_text_after_the_calls_is_content():
    text = '{"name": "get_time", "parameters": {"offset_hours": 3}}; and that is all'
    assert parse_tool_calls("llama3", text) == ("and that is all", calls(("get_time", {"offset_hours": 3})))


@pytest.mark.parametrize("text", [
    "The capital of France is Paris.",
    'Here is JSON: {"name": "get_time", "parameters": {}}',  # a call only counts at the start
    '{"parameters": {"offset_hours": 3}, "name": "get_time"',  # cut off, name last
    '{"city": "Paris"}',  # JSON, but not a call
    '[{"name": "get_time", "parameters": {}}]',
    "<|python_tag|>print('hi')",
])
def test_llama3_text_that_is_not_a_call_stays_content_unchanged(text):
    assert parse_tool_calls("llama3", text) == (text, [])


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError, match="unknown tool call format"):
        parse_tool_calls("mistral", "[TOOL_CALLS]")


def test_raw_control_characters_in_arguments_come_back_as_valid_json():
    text = '<tool_call>{"name": "echo", "arguments": {"text": "a\x04b\tc"}}</tool_call>'
    content, found = parse_tool_calls("hermes", text)
    assert content is None
    assert "\x04" not in found[0].arguments
    assert json.loads(found[0].arguments) == {"text": "a\x04b\tc"}
