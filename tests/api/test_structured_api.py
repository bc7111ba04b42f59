"""response_format through the official SDK: the answer always parses and matches the schema."""
import json
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.api.conftest import TINY

pytestmark = pytest.mark.money

TICKET = [{"role": "user", "content": "Classify this ticket: I was charged twice for my plan."}]
SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "technical", "account", "other"]},
        "summary": {"type": "string", "minLength": 10, "maxLength": 60},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 4},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["category", "summary", "tags", "priority"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True}}


def test_json_schema_answers_always_validate(client):
    for seed in range(12):
        completion = client.chat.completions.create(model=TINY, messages=TICKET, response_format=FORMAT,
                                                    temperature=1.0, seed=seed, max_tokens=400)
        assert completion.choices[0].finish_reason == "stop", seed
        jsonschema.validate(json.loads(completion.choices[0].message.content), SCHEMA)


def test_json_schema_in_a_stream_and_with_n(client):
    stream = client.chat.completions.create(model=TINY, messages=TICKET, response_format=FORMAT, temperature=1.0,
                                            seed=3, max_tokens=400, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), SCHEMA)
    several = client.chat.completions.create(model=TINY, messages=TICKET, response_format=FORMAT, temperature=1.0,
                                             seed=4, max_tokens=400, n=3)
    for choice in several.choices:
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)


class Ticket(BaseModel):
    category: Literal["billing", "technical", "account", "other"]
    summary: str = Field(min_length=10, max_length=60)
    urgent: bool


def test_the_sdk_parse_helper_gets_a_typed_object(client):
    completion = client.chat.completions.parse(model=TINY, messages=TICKET, response_format=Ticket,
                                               temperature=1.0, seed=1, max_tokens=300)
    ticket = completion.choices[0].message.parsed
    assert isinstance(ticket, Ticket) and 10 <= len(ticket.summary) <= 60


def test_json_object_answers_are_objects(client):
    finished = 0
    for seed in range(5):
        completion = client.chat.completions.create(model=TINY, messages=TICKET, temperature=1.0, seed=seed,
                                                    response_format={"type": "json_object"}, max_tokens=300)
        text = completion.choices[0].message.content
        assert text.startswith("{")
        if completion.choices[0].finish_reason == "stop":  # an open-ended object may still be cut by max_tokens
            assert isinstance(json.loads(text), dict)
            finished += 1
    assert finished == 2  # seeds 0-4: two objects close within max_tokens, three are cut (seeded: always so)


def test_a_schema_the_grammar_engine_cannot_compile_is_a_400(client, alice):
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "(?<=x)y"}}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=TINY, messages=TICKET, max_tokens=5, response_format={
            "type": "json_schema", "json_schema": {"name": "bad", "schema": schema}})
    assert err.value.body["param"] == "response_format.json_schema.schema"
    assert "ookbehind" in err.value.message
    alice.credit_account.refresh_from_db()
    assert alice.credit_account.held_micro == 0 and alice.credit_account.balance_micro == 1_000_000


# -- vLLM's structured outputs: choice, regex, grammar, json (and their older guided_* names) -------------------

LABELS = ["billing", "technical", "account", "other"]


@pytest.mark.parametrize("extra", [{"structured_outputs": {"choice": LABELS}}, {"guided_choice": LABELS}])
def test_a_choice_answer_is_always_one_of_the_choices(client, extra):
    answers = set()
    for seed in range(6):
        completion = client.chat.completions.create(model=TINY, messages=TICKET, temperature=1.0, seed=seed,
                                                    max_tokens=20, extra_body=extra)
        assert completion.choices[0].finish_reason == "stop", seed
        answers.add(completion.choices[0].message.content)
    assert answers <= set(LABELS) and len(answers) > 1  # the model still chooses: not always the first


@pytest.mark.parametrize("extra", [{"structured_outputs": {"regex": r"[A-Z]{3}-\d{4}"}},
                                   {"guided_regex": r"[A-Z]{3}-\d{4}", "guided_decoding_backend": "xgrammar"}])
def test_a_regex_answer_matches_the_whole_pattern_also_streamed(client, extra):
    import re

    for seed in range(3):
        completion = client.chat.completions.create(model=TINY, messages=TICKET, temperature=1.0, seed=seed,
                                                    max_tokens=20, extra_body=extra)
        assert re.fullmatch(r"[A-Z]{3}-\d{4}", completion.choices[0].message.content), completion
    stream = client.chat.completions.create(model=TINY, messages=TICKET, temperature=1.0, seed=9, max_tokens=20,
                                            stream=True, extra_body=extra)
    assert re.fullmatch(r"[A-Z]{3}-\d{4}", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))


def test_a_grammar_and_a_json_schema_given_as_structured_outputs(client):
    grammar = 'root ::= "ticket " digit digit " is " ("open" | "closed")\ndigit ::= [0-9]'
    completion = client.chat.completions.create(model=TINY, messages=TICKET, temperature=1.0, seed=1, max_tokens=20,
                                                extra_body={"structured_outputs": {"grammar": grammar}})
    import re

    assert re.fullmatch(r"ticket \d\d is (open|closed)", completion.choices[0].message.content)
    completion = client.chat.completions.create(model=TINY, messages=TICKET, temperature=1.0, seed=2, max_tokens=400,
                                                extra_body={"guided_json": json.dumps(SCHEMA)})
    jsonschema.validate(json.loads(completion.choices[0].message.content), SCHEMA)


@pytest.mark.parametrize("extra, param, code, says", [
    ({"structured_outputs": {"regex": "(unclosed"}}, "structured_outputs.regex", "invalid_regex", "invalid regex"),
    ({"guided_grammar": "root ::= "}, "guided_grammar", "invalid_grammar", "invalid grammar"),
    ({"guided_grammar": 'start ::= "a"'}, "guided_grammar", "invalid_grammar", "root"),
])
def test_a_pattern_or_grammar_that_cannot_compile_is_a_400_that_costs_nothing(client, alice, extra, param, code,
                                                                             says):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=TINY, messages=TICKET, max_tokens=5, extra_body=extra)
    assert (err.value.body["param"], err.value.code) == (param, code)
    assert says in err.value.message
    alice.credit_account.refresh_from_db()
    assert alice.credit_account.held_micro == 0 and alice.credit_account.balance_micro == 1_000_000


def test_a_structured_output_beside_a_forced_tool_call_is_a_400(client):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=TINY, messages=TICKET, max_tokens=5, tools=[tool],
                                       tool_choice="required", extra_body={"guided_choice": ["a", "b"]})
    assert err.value.body["param"] == "guided_choice" and "forces a tool call" in err.value.message
