import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.engine.tools import ToolCallStream, parse_tool_calls

CALL_W = '{"name": "get_weather", "arguments": {"city": "Zürich \\"HB\\" }", "unit": "celsius"}}'
CALL_T = '{"name": "get_time", "arguments": {"offset_hours": -3}}'
OUTPUTS = {
    "hermes": [
        f"<tool_call>\n{CALL_W}\n</tool_call>",
        f"Sure, checking.\n<tool_call>\n{CALL_W}\n</tool_call>\n<tool_call>\n{CALL_T}\n</tool_call>\n",
        f"<tool_call>{CALL_T}</tool_call> and some text after <tool",
        f"<tool_call> broken {CALL_T}</tool_call><tool_call>{CALL_T}",
        '<tool_call>{"name": "x", "arguments": {"s": "</tool_call> <tool_call>"}}</tool_call>',
        "<tool_call>\n{\"name\": \"half\", \"arguments\": {\"a\": 1\n",
        "Plain answer with < and <tool and </tool_call> but no call.  ",
        "  ",
        '<tool_call>{"name":"f","arguments":{"a":[1,{"b":"}"}],"c":"x\x04y"}}</tool_call>',
        '<tool_call>{"name": "f", "arguments": {"a": 1}, "extra": {"k": "}"}}</tool_call> after',
        '<tool_call>{"name": "f", "arguments": {"a": 1}</tool_call><tool_call>{"name": "g", "arguments": {}}',
        '<tool_call>{"name": "f", "arguments": {"a": 1 </tool_call> then text',
        '<tool_call>{"arguments": {"a": 1}, "name": "f"}</tool_call>',
        '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>',
        '<tool_call>{"name": "f", "arguments": {"s": "unterminated',
    ],
    "llama3": [
        '{"name": "get_time", "parameters": {"offset_hours": 5}}',
        '<|python_tag|>{"name": "get_time", "parameters": {"offset_hours": 5}}; {"name": "get_weather", '
        '"parameters": {"city": "Lima", "unit": "celsius"}}',
        '  {"name": "get_time", "parameters": {"offset_hours": 5}} ; trailing words ',
        '{"name": "get_time", "parameters": {"offset_hours": 5}}; {"name": broken}',
        "<|python_tag",
        "Not a call at all, but {braces} and ; semicolons.",
        '{"name": "cut", "parameters": {"a": "unterminated',
        '{"name":"f","parameters":{"a":{"b":[]}}};{"name":"g","arguments":{}} ; x',
        '{"parameters": {"a": 1}, "name": "f"}; {"name": "g", "parameters": {"b": 2}}',
    ],
}
CASES = [(fmt, text) for fmt, texts in OUTPUTS.items() for text in texts]


def run_stream(fmt, pieces):
    stream = ToolCallStream(fmt)
    deltas = [d for piece in pieces for d in stream.feed(piece)] + stream.finish()
    return stream, deltas


def assemble(deltas):
    """What an OpenAI client builds from the deltas: content and calls by index."""
    content, calls = "", {}
    for delta in deltas:
        assert set(delta) <= {"content", "tool_calls"}
        content += delta.get("content", "")
        for part in delta.get("tool_calls", []):
            call = calls.setdefault(part["index"], {"id": None, "name": None, "arguments": ""})
            if "id" in part:
                assert call["id"] is None, "a call's id is sent once"
                call.update(id=part["id"], name=part["function"]["name"])
                assert part["type"] == "function"
            call["arguments"] += part["function"]["arguments"]
    assert sorted(calls) == list(range(len(calls)))
    return content or None, [calls[i] for i in range(len(calls))]


def expected(fmt, text):
    content, calls = parse_tool_calls(fmt, text)
    return content, [(c.name, c.arguments) for c in calls]


def streamed(fmt, pieces):
    stream, deltas = run_stream(fmt, pieces)
    content, calls = assemble(deltas)
    assert [c["id"] for c in calls] == [c.id for c in stream.calls]
    return content, [(c["name"], c["arguments"]) for c in calls]


@pytest.mark.parametrize("fmt,text", CASES)
def test_every_split_point_streams_what_the_whole_output_parses_to(fmt, text):
    want = expected(fmt, text)
    for cut in range(len(text) + 1):
        assert streamed(fmt, [text[:cut], text[cut:]]) == want, f"split at {cut}"


@pytest.mark.parametrize("fmt,text", CASES)
def test_character_by_character_streaming_matches_parsing(fmt, text):
    assert streamed(fmt, list(text)) == expected(fmt, text)


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(CASES), data=st.data())
def test_random_splits_stream_what_the_whole_output_parses_to(case, data):
    fmt, text = case
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    assert streamed(fmt, pieces) == expected(fmt, text)


FRAGMENTS = ["<tool_call>", "</tool_call>", "\n", " ", "text", ";", "<|python_tag|>", "<tool", "{", "}",
             CALL_T, '{"name": "get_time", "parameters": {"offset_hours": 1}}', '"', "\\"]


@settings(max_examples=400, deadline=None)
@given(fmt=st.sampled_from(["hermes", "llama3"]), parts=st.lists(st.sampled_from(FRAGMENTS), max_size=10),
       data=st.data())
def test_random_outputs_stream_what_they_parse_to(fmt, parts, data):
    text = "".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    assert streamed(fmt, pieces) == expected(fmt, text)


def test_partial_tag_markup_is_never_sent_as_content():
    text = f"Checking.\n<tool_call>\n{CALL_T}\n</tool_call>"
    _, deltas = run_stream("hermes", list(text))
    sent = "".join(d.get("content", "") for d in deltas)
    assert sent == "Checking."
    assert not any("<" in d.get("content", "") for d in deltas)


def test_a_calls_name_is_sent_as_its_arguments_begin_and_its_arguments_as_they_come():
    stream = ToolCallStream("hermes")
    assert stream.feed("Hi ") == [{"content": "Hi"}]
    assert stream.feed("<tool_") == []
    assert stream.feed('call>\n{"name": "get_time", "argu') == []  # not yet known to be a call
    deltas = stream.feed('ments": {"offset')
    call_id = deltas[0]["tool_calls"][0]["id"]
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call_id)
    assert deltas == [
        {"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                         "function": {"name": "get_time", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"offset'}}]},
    ]
    assert stream.feed('_hours": -3') == [{"tool_calls": [{"index": 0, "function": {"arguments": '_hours": -3'}}]}]
    assert stream.feed("}}\n</tool_") == [{"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}]
    assert stream.feed("call>") == [] and stream.finish() == []
    assert [(c.id, c.name, c.arguments) for c in stream.calls] == [(call_id, "get_time", '{"offset_hours": -3}')]


def test_a_call_written_otherwise_is_sent_whole_once_complete():
    stream = ToolCallStream("hermes")
    assert stream.feed('<tool_call>{"arguments": {"offset_hours": -3}, ') == []
    deltas = stream.feed('"name": "get_time"}</tool_call>')
    assert [d["tool_calls"][0]["function"] for d in deltas] == [
        {"name": "get_time", "arguments": ""}, {"arguments": json.dumps({"offset_hours": -3})}]


def test_raw_control_characters_are_escaped_as_the_arguments_stream():
    _, deltas = run_stream("hermes", list('<tool_call>{"name": "echo", "arguments": {"text": "a\x04b\nc"}}'))
    _, calls = assemble(deltas)
    assert "\x04" not in calls[0]["arguments"] and json.loads(calls[0]["arguments"]) == {"text": "a\x04b\nc"}


def test_call_ids_differ_between_calls():
    _, deltas = run_stream("llama3", [OUTPUTS["llama3"][1]])
    _, calls = assemble(deltas)
    assert len({c["id"] for c in calls}) == 2


def test_a_finished_stream_takes_no_more_text():
    stream = ToolCallStream("hermes")
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.feed("more")
