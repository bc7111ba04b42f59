"""Tool calling through the official SDK: auto, required, named, none; whole and streamed; multi-turn."""
import json

import jsonschema
import openai
import pytest

from tests.api.conftest import TINY, TINY_HERMES, TINY_LLAMA3

pytestmark = pytest.mark.money

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "maxLength": 20},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["location", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
                       "required": ["zone"], "additionalProperties": False},
    },
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Tokyo?"}]


def check_calls(calls, names):
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("model", [TINY_HERMES, TINY_LLAMA3, TINY])
def test_named_and_required_tool_choice_always_give_valid_calls(client, model):
    for seed in range(6):
        named = client.chat.completions.create(
            model=model, messages=ASK, tools=TOOLS, temperature=1.0, seed=seed, max_tokens=200,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        choice = named.choices[0]
        assert choice.finish_reason == "stop"  # as OpenAI does for a call forced by name
        assert len(choice.message.tool_calls) == 1
        check_calls(choice.message.tool_calls, {"get_weather"})
        required = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, temperature=1.0, seed=seed,
                                                  max_tokens=300, tool_choice="required", parallel_tool_calls=False)
        assert required.choices[0].finish_reason == "tool_calls"
        assert len(required.choices[0].message.tool_calls) == 1
        check_calls(required.choices[0].message.tool_calls, {"get_weather", "get_time"})


@pytest.mark.parametrize("model", [TINY_HERMES, TINY_LLAMA3])
def test_a_streamed_call_adds_up_to_the_same_call(client, model):
    params = dict(model=model, messages=ASK, tools=TOOLS, temperature=1.0, seed=7, max_tokens=200,
                  tool_choice={"type": "function", "function": {"name": "get_weather"}})
    whole = client.chat.completions.create(**params).choices[0].message.tool_calls[0]
    calls, finish, argument_chunks = {}, None, 0
    for chunk in client.chat.completions.create(**params, stream=True):
        for choice in chunk.choices:
            assert not choice.delta.content
            for delta in choice.delta.tool_calls or ():
                argument_chunks += bool(delta.function.arguments)
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = call["id"] or delta.id
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "stop"
    assert list(calls) == [0] and calls[0]["id"].startswith("call_")
    assert (calls[0]["name"], calls[0]["arguments"]) == (whole.function.name, whole.function.arguments)
    json.loads(calls[0]["arguments"])
    # The arguments arrive as the model writes them, a piece per token or so, as OpenAI streams them.
    assert argument_chunks >= min(3, len(calls[0]["arguments"]) // 8), calls[0]["arguments"]
    # The SDK's own stream accumulator agrees.
    with client.chat.completions.stream(**params) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_auto_and_none(client):
    for seed in range(4):
        auto = client.chat.completions.create(model=TINY_HERMES, messages=ASK, tools=TOOLS, temperature=1.0,
                                              seed=seed, max_tokens=30)
        choice = auto.choices[0]
        if choice.message.tool_calls:  # the random model may or may not call: if it does, it is well-formed
            assert choice.finish_reason == "tool_calls"
            assert {c.function.name for c in choice.message.tool_calls} <= {"get_weather", "get_time"}
        else:
            assert choice.message.content is not None and choice.finish_reason in ("stop", "length")
    with_none = client.chat.completions.create(model=TINY_HERMES, messages=ASK, tools=TOOLS, tool_choice="none",
                                               temperature=0, max_tokens=20)
    without = client.chat.completions.create(model=TINY_HERMES, messages=ASK, temperature=0, max_tokens=20)
    assert with_none.choices[0].message.tool_calls is None
    assert with_none.usage.prompt_tokens == without.usage.prompt_tokens  # tools are not even shown to the model


@pytest.mark.parametrize("model", [TINY_HERMES, TINY_LLAMA3, TINY])
def test_a_conversation_continues_with_tool_results(client, model):
    first = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, temperature=1.0, seed=2,
                                           max_tokens=200, tool_choice="required")
    message = first.choices[0].message
    results = [{"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}
               for call in message.tool_calls]
    follow = client.chat.completions.create(
        model=model, tools=TOOLS, temperature=0, max_tokens=10,
        messages=[*ASK, message.model_dump(exclude_none=True), *results])
    assert follow.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_bad_tool_requests_are_400(client):
    cases = [
        (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice.function.name"),
        (dict(tool_choice="required"), "tool_choice"),
        (dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools[0].function.name"),
        (dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "response_format"),
    ]
    for params, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=TINY_HERMES, messages=ASK, max_tokens=5, **params)
        assert err.value.body["param"] == param, params
