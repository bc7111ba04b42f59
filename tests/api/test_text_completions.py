"""POST /v1/completions (OpenAI's legacy completions, vLLM's too) through the official SDK: one raw prompt, no chat
template, the same sampling, limits and billing as a chat completion."""
import json
import re

import openai
import pytest

from tests.api.conftest import TINY, tiny_cost, wait_for_usage

pytestmark = pytest.mark.money

PROMPT = "Once upon a time, by the sea,"


def test_a_text_prompt_is_completed_without_a_chat_template_and_charged_exactly(client, tokenizer, alice):
    completion = client.completions.create(model=TINY, prompt=PROMPT, max_tokens=12, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason == "length" and choice.logprobs is None
    ids = tokenizer.hf_tokenizer.encode(PROMPT)  # the text as it is, with the tokenizer's special tokens
    assert completion.usage.prompt_tokens == len(ids) and completion.usage.completion_tokens == 12
    record = wait_for_usage(completion.id)
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", len(ids), 12)
    assert record.cost_micro == tiny_cost(len(ids), 12)

    as_ids = client.completions.create(model=TINY, prompt=ids, max_tokens=12, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert as_ids.choices[0].text == choice.text  # token ids: the same prompt, the same greedy answer
    assert client.completions.create(model=TINY, prompt=[ids], max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text == choice.text


def test_max_tokens_defaults_to_16_as_openais_does(client):
    completion = client.completions.create(model=TINY, prompt=PROMPT, extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 16


def test_logprobs_take_the_legacy_shape_and_echo_puts_the_prompt_first(client):
    completion = client.completions.create(model=TINY, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=2,
                                           extra_body={"ignore_eos": True})
    lp = completion.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 8
    assert "".join(lp.tokens) == completion.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(8)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert top[token] == logprob <= 0 and 1 <= len(top) <= 3  # the sampled token and the two most likely
        assert logprob == max(top.values())  # greedy: the sampled token is the most likely
    echoed = client.completions.create(model=TINY, prompt=PROMPT, max_tokens=8, temperature=0, echo=True,
                                       extra_body={"ignore_eos": True})
    assert echoed.choices[0].text == PROMPT + completion.choices[0].text


def test_a_stream_adds_up_to_the_whole_answer_for_every_choice(client):
    params = dict(model=TINY, prompt=PROMPT, max_tokens=10, temperature=1.0, seed=5, n=2,
                  extra_body={"ignore_eos": True})
    whole = client.completions.create(**params)
    texts, finishes, usage = {0: "", 1: ""}, {}, None
    for chunk in client.completions.create(**params, stream=True, stream_options={"include_usage": True}):
        assert chunk.object == "text_completion" and chunk.id.startswith("cmpl-")
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {c.index: c.text for c in whole.choices}
    assert finishes == {0: "length", 1: "length"} and usage.completion_tokens == 20


def test_structured_outputs_constrain_a_raw_prompt_too(client):
    completion = client.completions.create(model=TINY, prompt="Ticket: charged twice. Category:", max_tokens=20,
                                           temperature=1.0, seed=3,
                                           extra_body={"guided_choice": ["billing", "technical"]})
    assert completion.choices[0].text in ("billing", "technical")
    completion = client.completions.create(model=TINY, prompt="Code:", max_tokens=20, temperature=1.0, seed=3,
                                           extra_body={"structured_outputs": {"regex": r"[A-Z]{2}\d{3}"}})
    assert re.fullmatch(r"[A-Z]{2}\d{3}", completion.choices[0].text)


@pytest.mark.parametrize("fields, param, code", [
    ({"prompt": ["one", [1, 2]]}, "prompt", "invalid_type"),
    ({"prompt": ["one"] * 129}, "prompt", "invalid_value"),
    ({"prompt": ["one"] * 65, "n": 2}, "prompt", "invalid_value"),
    ({"prompt": ["one", ""]}, "prompt[1]", "invalid_value"),
    ({"prompt": [[1], [10**9]]}, "prompt[1][0]", "invalid_value"),
    ({"prompt": ["x", "y " * 3000], "max_tokens": 16}, "prompt[1]", "context_length_exceeded"),
    ({"prompt": ""}, "prompt", "invalid_value"),
    ({"prompt": [1, "x"]}, "prompt[1]", "invalid_type"),
    ({"prompt": [1, -2]}, "prompt[1]", "invalid_value"),
    ({"prompt": [10**9]}, "prompt[0]", "invalid_value"),
    ({"prompt": 5}, "prompt", "invalid_type"),
    ({}, "prompt", "missing_required_parameter"),
    ({"prompt": "x", "suffix": "end"}, "suffix", "unsupported_parameter"),
    ({"prompt": "x", "logprobs": 21}, "logprobs", None),
    ({"prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "messages", "unknown_parameter"),
    ({"prompt": "x", "tools": []}, "tools", "unknown_parameter"),
    ({"prompt": "x", "max_tokens": 10**6}, "prompt", "context_length_exceeded"),
    ({"prompt": "x", "temperature": 3}, "temperature", None),
    ({"prompt": "x", "best_of": 2}, "best_of", "unsupported_parameter"),
])
def test_bad_bodies_are_400s_naming_the_field_and_cost_nothing(http, alice, alice_secret, fields, param, code):
    alice.credit_account.refresh_from_db()
    before = alice.credit_account.balance_micro
    answer = http.post("/v1/completions", json={"model": TINY, **fields},
                       headers={"Authorization": f"Bearer {alice_secret}"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and (code is None or error["code"] == code), error
    alice.credit_account.refresh_from_db()
    assert alice.credit_account.balance_micro == before and alice.credit_account.held_micro == 0


def test_a_prompt_over_the_limit_is_refused_before_it_is_tokenized(client, settings):
    settings.API_MAX_PROMPT_CHARS = 100
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=TINY, prompt="x" * 101, max_tokens=1)
    assert err.value.code == "prompt_too_long" and err.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=TINY, prompt=list(range(101)), max_tokens=1)
    assert err.value.code == "prompt_too_long"
    assert json.loads(err.value.response.text)["error"]["message"].startswith("The prompt is 101 tokens long")
