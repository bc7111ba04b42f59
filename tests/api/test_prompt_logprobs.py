"""A prompt's own logprobs through the official SDK: the legacy completions' `echo` with `logprobs` (how evaluation
harnesses score a text: `max_tokens` 0 or 1), and vLLM's `prompt_logprobs` on both completion endpoints. The values
are transformers' log-softmax of the same model; scoring is charged as the prompt it is, never from the cache."""
import openai
import pytest
import torch

from tests.api.conftest import TINY, tiny_cost, wait_for_usage

pytestmark = pytest.mark.money

PROMPT = "The capital of France is Paris, and the capital of Italy is"


@pytest.fixture(scope="module")
def reference(tiny_model_path, tokenizer):
    """prompt ids -> transformers' log-softmax rows (row p scores token p + 1)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, local_files_only=True).eval()

    def rows(ids):
        with torch.inference_mode():
            return torch.log_softmax(model(torch.tensor([list(ids)])).logits[0].float(), dim=-1)

    return rows


def test_echo_with_logprobs_and_no_tokens_scores_the_prompt_and_charges_it_alone(client, tokenizer, reference):
    ids = tokenizer.hf_tokenizer.encode(PROMPT)
    completion = client.completions.create(model=TINY, prompt=PROMPT, max_tokens=0, echo=True, logprobs=2)
    choice = completion.choices[0]
    assert choice.text == PROMPT and choice.finish_reason == "length"
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == len(ids)
    assert lp.tokens == [tokenizer.decode([t], skip_special_tokens=False) for t in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # the first token has nothing before it
    rows = reference(ids)
    for p in range(1, len(ids)):
        assert lp.token_logprobs[p] == pytest.approx(float(rows[p - 1][ids[p]]), abs=2e-4)
        top = lp.top_logprobs[p]
        assert top[lp.tokens[p]] == lp.token_logprobs[p]
        best = rows[p - 1].topk(2)
        for token_id, value in zip(best.indices.tolist(), best.values.tolist()):
            assert top[tokenizer.decode([token_id], skip_special_tokens=False)] == pytest.approx(value, abs=2e-4)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(ids))]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (len(ids), 0)
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    record = wait_for_usage(completion.id)
    assert (record.status, record.completion_tokens, record.cost_micro) == \
        ("completed", 0, tiny_cost(len(ids), 0))


def test_echo_with_logprobs_puts_the_prompts_before_the_generated_tokens_streamed_or_not(client, tokenizer):
    ids = tokenizer.hf_tokenizer.encode(PROMPT)
    params = dict(model=TINY, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=1,
                  extra_body={"ignore_eos": True})
    plain = client.completions.create(**params).choices[0]
    echoed = client.completions.create(**params, echo=True).choices[0]
    assert echoed.text == PROMPT + plain.text
    lp = echoed.logprobs
    assert len(lp.tokens) == len(ids) + 5
    assert lp.tokens[len(ids):] == plain.logprobs.tokens
    assert lp.token_logprobs[len(ids):] == pytest.approx(plain.logprobs.token_logprobs, abs=1e-5)
    assert lp.text_offset[len(ids):] == [len(PROMPT) + o for o in plain.logprobs.text_offset]

    text, tokens, logprobs = "", [], []
    for chunk in client.completions.create(**params, echo=True, stream=True):
        for choice in chunk.choices:
            text += choice.text
            if choice.logprobs is not None:
                tokens += choice.logprobs.tokens
                logprobs += choice.logprobs.token_logprobs
    assert text == echoed.text and tokens == lp.tokens
    assert logprobs[0] is None and logprobs[1:] == pytest.approx(lp.token_logprobs[1:], abs=1e-5)


def test_scoring_a_generated_text_gives_the_logprobs_it_was_generated_with(client, tokenizer, reference):
    """What an evaluation harness relies on: the logprob of a continuation is the same, scored or generated."""
    ids = tokenizer.hf_tokenizer.encode(PROMPT)
    continuation = list(ids)
    for _ in range(6):  # transformers' greedy continuation: the engine's too
        continuation.append(int(reference(continuation)[-1].argmax()))
    continuation = continuation[len(ids):]
    generated = client.completions.create(model=TINY, prompt=ids, max_tokens=6, temperature=0, logprobs=0,
                                          extra_body={"ignore_eos": True}).choices[0]
    assert generated.logprobs.tokens == [tokenizer.decode([t]) for t in continuation]
    scored = client.completions.create(model=TINY, prompt=ids + continuation, max_tokens=0, echo=True, logprobs=0)
    tail = scored.choices[0].logprobs.token_logprobs[len(ids):]
    assert tail == pytest.approx(generated.logprobs.token_logprobs, abs=1e-4)


def test_vllms_prompt_logprobs_on_completions_and_chat(client, tokenizer, reference):
    ids = tokenizer.hf_tokenizer.encode(PROMPT)
    completion = client.completions.create(model=TINY, prompt=PROMPT, max_tokens=2, temperature=0,
                                           extra_body={"prompt_logprobs": 1})
    scores = completion.choices[0].model_extra["prompt_logprobs"]
    assert len(scores) == len(ids) and scores[0] is None
    rows = reference(ids)
    for p in range(1, len(ids)):
        entry = scores[p]
        own = entry[str(ids[p])]
        assert own["logprob"] == pytest.approx(float(rows[p - 1][ids[p]]), abs=2e-4)
        assert own["rank"] == int((rows[p - 1] > rows[p - 1][ids[p]]).sum()) + 1
        assert own["decoded_token"] == tokenizer.decode([ids[p]], skip_special_tokens=False)
        best = int(rows[p - 1].argmax())
        assert entry[str(best)]["rank"] == 1 and len(entry) in (1, 2)
    assert completion.choices[0].logprobs is None  # the generated tokens' logprobs were not asked for

    messages = [{"role": "user", "content": "Name a colour."}]
    chat = client.chat.completions.create(model=TINY, messages=messages, max_tokens=2,
                                          extra_body={"prompt_logprobs": 0})
    scores = chat.model_extra["prompt_logprobs"]
    chat_ids = tokenizer.encode_chat(messages)
    assert len(scores) == chat.usage.prompt_tokens == len(chat_ids) and scores[0] is None
    assert [list(entry) for entry in scores[1:]] == [[str(t)] for t in chat_ids[1:]]  # 0 alternatives: its own
    chat_rows = reference(chat_ids)
    assert scores[-1][str(chat_ids[-1])]["logprob"] == pytest.approx(float(chat_rows[-2][chat_ids[-1]]), abs=2e-4)


def test_a_scored_prompt_is_computed_again_and_charged_in_full(client, tokenizer):
    prompt = "A prompt long enough to fill a few cache blocks. " * 6
    ids = tokenizer.hf_tokenizer.encode(prompt)
    client.completions.create(model=TINY, prompt=prompt, max_tokens=1)
    again = client.completions.create(model=TINY, prompt=prompt, max_tokens=1)
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # the cache does hold it
    scored = client.completions.create(model=TINY, prompt=prompt, max_tokens=0, echo=True, logprobs=0)
    assert scored.usage.prompt_tokens_details.cached_tokens == 0
    assert wait_for_usage(scored.id).cost_micro == tiny_cost(len(ids), 0)


def test_tokens_can_be_named_by_their_ids(client, tokenizer):
    ids = tokenizer.hf_tokenizer.encode(PROMPT)
    params = dict(model=TINY, prompt=PROMPT, max_tokens=3, temperature=0, logprobs=2, echo=True,
                  extra_body={"ignore_eos": True})
    named = client.completions.create(**params).choices[0].logprobs
    as_ids = client.completions.create(**{**params, "extra_body": {"ignore_eos": True,
                                                                   "return_tokens_as_token_ids": True}})
    lp = as_ids.choices[0].logprobs
    assert lp.tokens[:len(ids)] == [f"token_id:{t}" for t in ids]
    assert all(t.startswith("token_id:") for t in lp.tokens) and len(lp.tokens) == len(named.tokens)
    assert lp.text_offset == named.text_offset  # still offsets into the text
    assert lp.token_logprobs == named.token_logprobs
    assert all(all(k.startswith("token_id:") for k in top) for top in lp.top_logprobs[1:])
    streamed = []
    for chunk in client.completions.create(**{**params, "extra_body": {"ignore_eos": True,
                                                                        "return_tokens_as_token_ids": True}},
                                           stream=True):
        for choice in chunk.choices:
            streamed += choice.logprobs.tokens if choice.logprobs else []
    assert streamed == lp.tokens

    chat = client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                          logprobs=True, top_logprobs=1,
                                          extra_body={"return_tokens_as_token_ids": True, "prompt_logprobs": 1})
    content = chat.choices[0].logprobs.content
    assert content and all(e.token.startswith("token_id:") and e.top_logprobs[0].token.startswith("token_id:")
                           for e in content)
    assert all(v["decoded_token"].startswith("token_id:") for entry in chat.model_extra["prompt_logprobs"][1:]
               for v in entry.values())
    stream = client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                            logprobs=True, stream=True,
                                            extra_body={"return_tokens_as_token_ids": True})
    tokens = [e.token for chunk in stream for c in chunk.choices if c.logprobs for e in c.logprobs.content or ()]
    assert tokens and all(t.startswith("token_id:") for t in tokens)


@pytest.mark.parametrize("path, fields, param", [
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0, "echo": True, "n": 2}, "n"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0, "echo": True, "min_tokens": 1}, "min_tokens"),
    ("/v1/completions", {"prompt": "x", "prompt_logprobs": 21}, "prompt_logprobs"),
    ("/v1/completions", {"prompt": "x", "prompt_logprobs": -1}, "prompt_logprobs"),
    ("/v1/completions", {"prompt": "x", "prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "prompt_logprobs": "1"},
     "prompt_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "prompt_logprobs": 0, "stream": True},
     "prompt_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "return_tokens_as_token_ids": "yes"}, "return_tokens_as_token_ids"),
])
def test_bad_scoring_requests_are_400s_that_cost_nothing(http, alice, alice_secret, path, fields, param):
    alice.credit_account.refresh_from_db()
    before = alice.credit_account.balance_micro
    answer = http.post(path, json={"model": TINY, **fields}, headers={"Authorization": f"Bearer {alice_secret}"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param, answer.text
    alice.credit_account.refresh_from_db()
    assert alice.credit_account.balance_micro == before and alice.credit_account.held_micro == 0


def test_the_sdk_takes_a_scoring_request_as_it_takes_any_other(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=TINY, prompt=PROMPT, max_tokens=0)
    assert err.value.body["param"] == "max_tokens"


def test_token_ids_come_back_with_the_text_whole_or_streamed(client, tokenizer):
    """vLLM's return_token_ids: what RL rollouts train on, exactly the tokens the model saw and wrote."""
    messages = [{"role": "user", "content": "Say something."}]
    params = dict(model=TINY, messages=messages, max_tokens=8, temperature=0, extra_body={"return_token_ids": True})
    chat = client.chat.completions.create(**params)
    assert chat.model_extra["prompt_token_ids"] == tokenizer.encode_chat(messages)
    ids = chat.choices[0].model_extra["token_ids"]
    assert len(ids) == chat.usage.completion_tokens
    assert tokenizer.decode(ids) == chat.choices[0].message.content
    prompt_ids, streamed = None, []
    for chunk in client.chat.completions.create(**params, stream=True):
        prompt_ids = prompt_ids or (chunk.model_extra or {}).get("prompt_token_ids")
        for choice in chunk.choices:
            streamed += (choice.model_extra or {}).get("token_ids") or []
    assert (prompt_ids, streamed) == (chat.model_extra["prompt_token_ids"], ids)

    batch = client.completions.create(model=TINY, prompt=["One, two,", PROMPT], max_tokens=5, temperature=0,
                                      extra_body={"return_token_ids": True, "ignore_eos": True})
    for choice, prompt in zip(batch.choices, ["One, two,", PROMPT]):
        assert choice.model_extra["prompt_token_ids"] == tokenizer.hf_tokenizer.encode(prompt)
        assert len(choice.model_extra["token_ids"]) == 5
        assert tokenizer.decode(choice.model_extra["token_ids"]) == choice.text
    got = {}
    for chunk in client.completions.create(model=TINY, prompt=["One, two,", PROMPT], max_tokens=5, temperature=0,
                                           stream=True, extra_body={"return_token_ids": True, "ignore_eos": True}):
        for choice in chunk.choices:
            entry = got.setdefault(choice.index, {"prompt": None, "ids": []})
            entry["prompt"] = entry["prompt"] or choice.model_extra.get("prompt_token_ids")
            entry["ids"] += choice.model_extra.get("token_ids") or []
    assert got == {i: {"prompt": c.model_extra["prompt_token_ids"], "ids": c.model_extra["token_ids"]}
                   for i, c in enumerate(batch.choices)}
