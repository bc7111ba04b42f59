"""Forced tool calls through the engine: a random tiny model sampled at temperature 1
still answers with well-formed calls that parse and follow each tool's schema."""

import json
import threading

import jsonschema
import pytest

from inference.chat.request import ToolChoice
from inference.engine.tools import ToolCallStream, parse_tool_calls, tool_call_constraint
from inference.engine.types import GenerationRequest, SamplingParams

from .conftest import TOOLS

SEEDS = range(20)
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
TIMEOUT = 120


@pytest.fixture(scope="module", params=["hermes", "llama3", "chatml"])
def engine(request, tool_model_paths):
    from inference.engine.engine import Engine

    eng = Engine(tool_model_paths[request.param], dtype="float32")
    eng.start()
    yield eng
    eng.shutdown(timeout=30)


def generate(engine, constraint, max_tokens):
    """Final text and finish reason of one request per seed, all submitted at once."""
    prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "What time is it in Paris?"}], tools=TOOLS)
    results, done = {}, threading.Semaphore(0)
    for seed in SEEDS:
        texts = []

        def on_event(event, seed=seed, texts=texts):
            texts.append(event.text)
            if event.finished:
                results[seed] = ("".join(texts), event.finish_reason, event.error)
                done.release()

        params = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed)
        engine.submit(GenerationRequest(f"tools-{seed}", list(prompt), params, constraint=constraint), on_event)
    for _ in SEEDS:
        assert done.acquire(timeout=TIMEOUT), "a request never finished"
    return [results[seed] for seed in SEEDS]


def check_calls(engine, outputs, allowed_names, max_calls=None):
    fmt = engine.tokenizer.tool_format
    for text, finish_reason, error in outputs:
        assert (finish_reason, error) == ("stop", None), text
        content, calls = parse_tool_calls(fmt, text)
        assert content is None, text
        assert calls and (max_calls is None or len(calls) <= max_calls), text
        for call in calls:
            assert call.name in allowed_names
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
        # The same output streamed token by token gives the same calls.
        stream = ToolCallStream(fmt)
        stream.feed(text)
        stream.finish()
        assert [(c.name, c.arguments) for c in stream.calls] == [(c.name, c.arguments) for c in calls]


def test_named_tool_choice_always_yields_one_valid_call(engine):
    constraint = tool_call_constraint(engine.tokenizer.tool_format, TOOLS, ToolChoice("named", "get_weather"), True)
    check_calls(engine, generate(engine, constraint, max_tokens=200), {"get_weather"}, max_calls=1)


def test_required_tool_choice_yields_one_valid_call_of_any_tool(engine):
    constraint = tool_call_constraint(engine.tokenizer.tool_format, TOOLS, ToolChoice("required"), False)
    outputs = generate(engine, constraint, max_tokens=200)
    check_calls(engine, outputs, set(SCHEMAS), max_calls=1)


def test_required_parallel_tool_choice_yields_valid_calls(engine):
    constraint = tool_call_constraint(engine.tokenizer.tool_format, TOOLS, ToolChoice("required"), True)
    outputs = generate(engine, constraint, max_tokens=600)
    finished = [o for o in outputs if o[1] == "stop"]
    assert len(finished) >= len(SEEDS) // 2, "most sampled call lists should end"
    check_calls(engine, finished, set(SCHEMAS))
    fmt = engine.tokenizer.tool_format
    assert any(len(parse_tool_calls(fmt, text)[1]) > 1 for text, _, _ in finished), "parallel calls never sampled"
