"""Several prompts in one POST /v1/completions, through the official SDK: each answered as if sent alone, its choices
numbered after the prompts before it (prompt i's are i*n .. i*n + n - 1, as OpenAI's), whole or streamed, scored
with echo and logprobs as evaluation harnesses send them, and one charge for them all, settled exactly."""
import pytest

from tests.api.conftest import TINY, tiny_cost, wait_for_usage

pytestmark = pytest.mark.money

PROMPTS = ["Once upon a time,", "The best way to cook rice is", "1, 2, 3, 4,"]
GREEDY = dict(model=TINY, max_tokens=6, temperature=0, extra_body={"ignore_eos": True})


def test_each_prompt_gets_its_own_choices_as_if_sent_alone_and_one_exact_charge(client, tokenizer):
    batch = client.completions.create(prompt=PROMPTS, n=2, **GREEDY)
    assert [c.index for c in batch.choices] == list(range(6))
    for i, prompt in enumerate(PROMPTS):
        alone = client.completions.create(prompt=prompt, **GREEDY).choices[0].text
        assert [batch.choices[2 * i].text, batch.choices[2 * i + 1].text] == [alone, alone], prompt
    prompt_tokens = sum(len(tokenizer.hf_tokenizer.encode(p)) for p in PROMPTS)
    assert (batch.usage.prompt_tokens, batch.usage.completion_tokens) == (prompt_tokens, 36)
    record = wait_for_usage(batch.id)
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("completed", prompt_tokens, 36)
    assert record.cost_micro == tiny_cost(prompt_tokens, 36, batch.usage.prompt_tokens_details.cached_tokens)


def test_token_id_prompts_and_a_stream_give_the_same_choices(client, tokenizer):
    whole = client.completions.create(prompt=PROMPTS, **GREEDY)
    ids = [tokenizer.hf_tokenizer.encode(p) for p in PROMPTS]
    assert [c.text for c in client.completions.create(prompt=ids, **GREEDY).choices] == \
        [c.text for c in whole.choices]
    texts, finishes, usage = {}, {}, None
    for chunk in client.completions.create(prompt=PROMPTS, stream=True, stream_options={"include_usage": True},
                                           echo=True, **GREEDY):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {i: PROMPTS[i] + c.text for i, c in enumerate(whole.choices)}
    assert finishes == {0: "length", 1: "length", 2: "length"}
    assert usage.completion_tokens == 18


def test_a_batch_of_texts_is_scored_as_each_text_alone_streamed_or_not(client):
    """lm-evaluation-harness's log-likelihood requests: echo, logprobs, max_tokens 0 or 1, a batch of contexts."""
    params = dict(model=TINY, prompt=PROMPTS, max_tokens=0, echo=True, logprobs=1)
    batch = client.completions.create(**params)
    assert [c.text for c in batch.choices] == PROMPTS and batch.usage.completion_tokens == 0
    for i, prompt in enumerate(PROMPTS):
        alone = client.completions.create(**{**params, "prompt": prompt}).choices[0].logprobs
        got = batch.choices[i].logprobs
        assert got.tokens == alone.tokens and got.text_offset == alone.text_offset
        assert got.token_logprobs[0] is None
        assert got.token_logprobs[1:] == pytest.approx(alone.token_logprobs[1:], abs=1e-5)

    streamed = {}
    for chunk in client.completions.create(**{**params, "max_tokens": 1, "temperature": 0}, stream=True):
        for choice in chunk.choices:
            if choice.logprobs is not None:
                streamed.setdefault(choice.index, []).extend(choice.logprobs.token_logprobs)
    assert sorted(streamed) == [0, 1, 2]
    for i in range(3):
        scored = batch.choices[i].logprobs.token_logprobs
        assert streamed[i][0] is None and len(streamed[i]) == len(scored) + 1  # the prompt, then one token
        assert streamed[i][1:len(scored)] == pytest.approx(scored[1:], abs=1e-5)


def test_vllms_prompt_logprobs_come_with_each_prompts_choices(client, tokenizer):
    batch = client.completions.create(model=TINY, prompt=PROMPTS[:2], n=2, max_tokens=1,
                                      extra_body={"prompt_logprobs": 0})
    for i, choice in enumerate(batch.choices):
        ids = tokenizer.hf_tokenizer.encode(PROMPTS[i // 2])
        scores = choice.model_extra["prompt_logprobs"]
        assert scores[0] is None and [list(entry) for entry in scores[1:]] == [[str(t)] for t in ids[1:]]
