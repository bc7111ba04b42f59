"""Limits before work: a request is counted, sized and checked for credit before it is tokenized, one
organization's tokenizing is bounded, and JSON schemas are bounded in size and compile time."""
import math
import threading
import time
import uuid

import openai
import pytest

from core import clock as limits_clock
from core.catalogue import get_model
from core.counters import get_counters
from inference.dispatch import get_backend
from inference.engine.tokenizer import ChatTokenizer
from tests.api.conftest import TINY
from tests.factories import make_key, make_org

pytestmark = pytest.mark.money

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def window():
    """Fresh rate counters and a clock frozen at the start of a minute, so no window ends mid-test."""
    get_counters().clear()
    limits_clock.freeze(math.floor(time.time() / 60) * 60 + 1)
    yield
    limits_clock.thaw()
    get_counters().clear()


@pytest.fixture
def encodes(monkeypatch):
    """Every prompt the live server tokenizes (it runs in this process), in order."""
    seen = []
    encode = ChatTokenizer.encode_chat

    def counting(self, messages, **kwargs):
        seen.append(messages)
        return encode(self, messages, **kwargs)

    monkeypatch.setattr(ChatTokenizer, "encode_chat", counting)
    return seen


def sdk(base_url, secret):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0)


def test_a_huge_prompt_from_a_key_without_credit_is_refused_before_tokenizing(base_url, encodes, window):
    api = sdk(base_url, make_key(make_org("broke"))[1])
    huge = [{"role": "user", "content": "word " * 220_000}]  # 1.1 million characters, past the default limit
    with pytest.raises(openai.BadRequestError) as refused:
        api.chat.completions.create(model=TINY, messages=huge)
    assert (refused.value.code, refused.value.body["param"]) == ("prompt_too_long", "messages")
    assert "1100000 characters" in refused.value.message and "at most 1000000" in refused.value.message
    with pytest.raises(openai.APIStatusError) as unpaid:  # within the limit: no credit, still no tokenizing
        api.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "word " * 100_000}])
    assert (unpaid.value.status_code, unpaid.value.code) == (402, "insufficient_credit")
    assert encodes == []


def test_a_sessions_history_counts_towards_the_prompt_limit(base_url, alice, client, encodes, settings, window):
    settings.API_MAX_PROMPT_CHARS = 3000
    alice.auto_create_sessions = True
    alice.save(update_fields=["auto_create_sessions"])
    session = client.chat.completions.with_raw_response.create(
        model=TINY, messages=[{"role": "user", "content": "x" * 2000}], max_tokens=1)
    session_id = session.headers["x-session-id"]
    tokenized = len(encodes)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "y" * 1500}], max_tokens=1,
                                       extra_body={"session_id": session_id})
    assert refused.value.code == "prompt_too_long" and "with the session's history" in refused.value.message
    assert len(encodes) == tokenized


def test_over_long_requests_count_against_the_keys_requests_per_minute(base_url, alice, encodes, settings, window):
    settings.API_MAX_PROMPT_CHARS = 1000
    key, secret = make_key(alice, name="limited")
    key.rate_limit_rpm = 3
    key.save(update_fields=["rate_limit_rpm"])
    api = sdk(base_url, secret)
    left = []
    for _ in range(3):
        with pytest.raises(openai.BadRequestError) as refused:
            api.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "z" * 5000}])
        assert refused.value.code == "prompt_too_long"
        left.append(refused.value.response.headers["x-ratelimit-remaining-requests"])
    assert left == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as limited:
        api.chat.completions.create(model=TINY, messages=HI, max_tokens=1)
    assert (limited.value.code, limited.value.type) == ("rate_limit_exceeded", "requests")
    assert encodes == []


def test_one_organization_cannot_tokenize_more_than_its_share_at_once(base_url, alice, client, settings, monkeypatch,
                                                                      window):
    settings.API_ORG_TOKENIZING_CHARS = 2000
    entered, release = threading.Event(), threading.Event()
    encode = ChatTokenizer.encode_chat

    def slow(self, messages, **kwargs):
        if "hold" in messages[-1]["content"]:
            entered.set()
            release.wait(30)
        return encode(self, messages, **kwargs)

    monkeypatch.setattr(ChatTokenizer, "encode_chat", slow)
    held = {}
    first = threading.Thread(target=lambda: held.update(answer=client.chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "hold " + "word " * 240}], max_tokens=1)))
    first.start()
    try:
        assert entered.wait(30)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "word " * 240}],
                                           max_tokens=1)
        assert refused.value.code == "too_many_concurrent_requests"
        assert "at most 2000" in refused.value.message
        assert refused.value.response.headers["Retry-After"] == "1"
        bob = sdk(base_url, make_key(make_org("bob", credit_micro=1_000_000))[1])
        assert bob.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "word " * 240}],
                                           max_tokens=1).choices  # another organization is not held up
    finally:
        release.set()
        first.join(60)
    assert held["answer"].choices
    assert client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "word " * 240}],
                                          max_tokens=1).choices


def json_schema(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def test_a_100000_value_enum_is_a_400_naming_the_limit(client, encodes, window):
    schema = {"type": "object", "properties": {"pick": {"type": "string", "enum": [f"v{i}" for i in range(100_000)]}}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=TINY, messages=HI, response_format=json_schema(schema))
    error = refused.value
    assert (error.code, error.body["param"]) == ("schema_too_large", "response_format.json_schema.schema")
    assert "100000 enum values" in error.message and "at most 1000 enum values" in error.message
    assert encodes == []


def nested(depth: int) -> dict:
    schema = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


def tool(name: str, parameters: dict) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def test_schema_depth_and_property_count_are_limited_across_a_request(client, window):
    assert client.chat.completions.create(model=TINY, messages=HI, max_tokens=1,
                                          tools=[tool("deep_enough", nested(32))]).choices
    with pytest.raises(openai.BadRequestError) as deep:
        client.chat.completions.create(model=TINY, messages=HI, tools=[tool("too_deep", nested(33))])
    assert (deep.value.code, deep.value.body["param"]) == ("schema_too_deep", "tools[0].function.parameters")
    assert "more than 32 levels" in deep.value.message
    many = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(600)}}
    with pytest.raises(openai.BadRequestError) as wide:  # 600 + 600: the tools and the response share the limit
        client.chat.completions.create(model=TINY, messages=HI, tools=[tool("wide", many)],
                                       response_format=json_schema(many))
    assert (wide.value.code, wide.value.body["param"]) == ("schema_too_large", "response_format.json_schema.schema")
    assert "1200 properties" in wide.value.message and "at most 1000 properties" in wide.value.message
    wordy = {"type": "object", "description": "d" * 70_000, "properties": {}}
    with pytest.raises(openai.BadRequestError) as large:  # two of them pass 128 KiB
        client.chat.completions.create(model=TINY, messages=HI, tools=[tool("first", wordy), tool("second", wordy)])
    assert (large.value.code, large.value.body["param"]) == ("schema_too_large", "tools[1].function.parameters")
    assert "at most 131072 bytes" in large.value.message


def test_a_schema_whose_grammar_compiles_past_the_deadline_is_a_400_and_costs_nothing(client, alice, monkeypatch,
                                                                                     window):
    compiler = get_backend()._engine(get_model(TINY)).grammar_compiler()
    assert compiler.process is not None  # the server compiles grammars in a process it can stop
    monkeypatch.setattr(compiler.process, "timeout_s", 1e-6)
    schema = {"type": "object", "properties": {f"s_{uuid.uuid4().hex[:8]}": {"type": "string", "maxLength": 50}}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=TINY, messages=HI, max_tokens=5, response_format=json_schema(schema))
    assert refused.value.code == "invalid_json_schema"
    assert "took longer than 1e-06 s, the limit" in refused.value.message
    alice.credit_account.refresh_from_db()
    assert alice.credit_account.balance_micro == 1_000_000 and alice.credit_account.held_micro == 0
    monkeypatch.undo()
    other = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    answer = client.chat.completions.create(model=TINY, messages=HI, max_tokens=20, response_format=json_schema(other))
    assert answer.choices  # the stopped compiler starts again for the next grammar
