"""Each sampling and output parameter has its effect, seen through the official SDK."""
import openai
import pytest

from tests.api.conftest import TINY, TINY_GREEDY

pytestmark = pytest.mark.money

ASK = [{"role": "user", "content": "Count the colours of the rainbow."}]


def pieces_of(completion, index: int = 0) -> list[str]:
    """The generated tokens' text, from the logprobs."""
    return [entry.token for entry in completion.choices[index].logprobs.content]


def id_of(tokenizer, piece: str) -> int | None:
    """The one token id whose text is `piece`, or None when several tokens read the same."""
    ids = [i for i in range(len(tokenizer.hf_tokenizer)) if tokenizer.decode([i], skip_special_tokens=False) == piece]
    return ids[0] if len(ids) == 1 else None


# Parameters beyond OpenAI's own travel in extra_body, as with any vLLM-style server.
EXTRAS = {"top_k", "min_p", "repetition_penalty", "ignore_eos", "min_tokens", "stop_token_ids",
          "include_stop_str_in_output", "echo", "truncate_prompt_tokens"}


def create(client, **params):
    extra = {**params.pop("extra_body", {}), **{name: params.pop(name) for name in list(params) if name in EXTRAS}}
    return client.chat.completions.create(**params, extra_body=extra or None)


def greedy(client, **params):
    params = {"model": TINY, "messages": ASK, "max_tokens": 12, "temperature": 0, **params}
    return create(client, **params)


def test_n_gives_that_many_choices_and_charges_them_all(client, alice):
    completion = client.chat.completions.create(model=TINY, messages=ASK, n=3, max_tokens=6, temperature=1.0,
                                                seed=11, logprobs=True)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    lengths = [len(c.logprobs.content) for c in completion.choices]
    assert completion.usage.completion_tokens == sum(lengths)
    assert len({c.message.content for c in completion.choices}) == 3  # sampled apart
    again = client.chat.completions.create(model=TINY, messages=ASK, n=3, max_tokens=6, temperature=1.0, seed=11)
    assert [c.message.content for c in again.choices] == [c.message.content for c in completion.choices]


def test_n_streams_every_choice_with_its_own_index(client):
    params = dict(model=TINY, messages=ASK, n=2, max_tokens=6, temperature=1.0, seed=5)
    whole = client.chat.completions.create(**params)
    texts, finishes = {0: "", 1: ""}, {}
    for chunk in client.chat.completions.create(**params, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finishes == {c.index: c.finish_reason for c in whole.choices}


def test_logprobs_give_the_chosen_token_and_its_alternatives(client):
    completion = greedy(client, logprobs=True, top_logprobs=5)
    content = completion.choices[0].logprobs.content
    assert len(content) == completion.usage.completion_tokens
    text = "".join(bytes(entry.bytes).decode() for entry in content)
    assert completion.choices[0].message.content.startswith(text[: len(completion.choices[0].message.content)])
    for entry in content:
        assert len(entry.top_logprobs) == 5
        values = [alt.logprob for alt in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely token
        assert entry.logprob == pytest.approx(values[0])
    assert greedy(client).choices[0].logprobs is None


def test_top_logprobs_without_logprobs_is_refused(client):
    with pytest.raises(openai.BadRequestError) as err:
        greedy(client, top_logprobs=3)
    assert err.value.body["param"] == "top_logprobs"


def test_logit_bias_forces_and_bans_tokens(client, tokenizer):
    first = pieces_of(greedy(client, logprobs=True))[0]
    first_id = id_of(tokenizer, first)
    assert first_id is not None
    banned = greedy(client, logprobs=True, logit_bias={str(first_id): -100})
    assert pieces_of(banned)[0] != first
    target = id_of(tokenizer, " the")
    forced = greedy(client, logprobs=True, logit_bias={str(target): 100}, max_tokens=4)
    assert pieces_of(forced) == [" the"] * 4


def test_logit_bias_outside_the_vocabulary_is_refused(client, tokenizer):
    vocab = len(tokenizer.hf_tokenizer)
    with pytest.raises(openai.BadRequestError) as err:
        greedy(client, logit_bias={str(vocab + 5): 1})
    assert err.value.body["param"] == f"logit_bias.{vocab + 5}"


def test_penalties_change_a_repetitive_answer(client, tokenizer):
    plain = pieces_of(greedy(client, logprobs=True, max_tokens=24, ignore_eos=True))
    assert len(set(plain)) < len(plain)  # the tiny model repeats itself
    for params in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}, {"repetition_penalty": 1.8}):
        penalised = pieces_of(greedy(client, logprobs=True, max_tokens=24, ignore_eos=True, **params))
        assert penalised != plain, params
        assert len(set(penalised)) >= len(set(plain)), params


def test_top_k_one_and_min_p_one_are_greedy(client):
    reference = greedy(client).choices[0].message.content
    for params in ({"top_k": 1}, {"min_p": 1.0}):
        sampled = create(client, model=TINY, messages=ASK, max_tokens=12, temperature=1.5, seed=3, **params)
        assert sampled.choices[0].message.content == reference, params


def test_ignore_eos_and_min_tokens_set_the_length(client, tokenizer):
    exact = greedy(client, ignore_eos=True, max_tokens=20)
    assert exact.usage.completion_tokens == 20 and exact.choices[0].finish_reason == "length"
    # The tiny model never ends a greedy answer by itself: EOS made the likeliest token ends it at once, and
    # min_tokens holds it back until that many tokens exist (EOS, the last, counts as one).
    eos = {str(min(tokenizer.eos_token_ids)): 100}
    at_once = create(client, model=TINY_GREEDY, messages=ASK, max_tokens=30, logit_bias=eos)
    assert (at_once.usage.completion_tokens, at_once.choices[0].finish_reason) == (1, "stop")
    held = create(client, model=TINY_GREEDY, messages=ASK, max_tokens=30, min_tokens=9, logit_bias=eos)
    assert (held.usage.completion_tokens, held.choices[0].finish_reason) == (10, "stop")


def test_stop_token_ids_and_include_stop_str(client, tokenizer):
    plain = greedy(client, logprobs=True, ignore_eos=True, max_tokens=10)
    pieces = pieces_of(plain)
    position = next(i for i in range(2, 10) if id_of(tokenizer, pieces[i]) is not None)
    stopped = greedy(client, ignore_eos=True, max_tokens=10, stop_token_ids=[id_of(tokenizer, pieces[position])])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage.completion_tokens == pieces.index(pieces[position]) + 1
    text = plain.choices[0].message.content
    stop = text[4:7]
    cut = greedy(client, ignore_eos=True, max_tokens=10, stop=[stop])
    kept = greedy(client, ignore_eos=True, max_tokens=10, stop=[stop], include_stop_str_in_output=True)
    assert stop not in cut.choices[0].message.content
    assert kept.choices[0].message.content == cut.choices[0].message.content + stop


def test_echo_and_truncate_prompt_tokens(client):
    messages = [*ASK, {"role": "assistant", "content": "Red, orange"}]
    echoed = create(client, model=TINY, messages=messages, max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].message.content.startswith("Red, orange")
    truncated = greedy(client, truncate_prompt_tokens=5)
    assert truncated.usage.prompt_tokens == 5


def test_thinking_controls_are_refused_for_a_model_that_does_not_think(client):
    with pytest.raises(openai.BadRequestError) as err:
        greedy(client, reasoning_effort="low")
    assert err.value.body["param"] == "reasoning_effort" and err.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as err:
        greedy(client, extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    assert err.value.code == "unsupported_parameter"


def test_user_metadata_and_parallel_tool_calls_are_accepted(client):
    completion = greedy(client, user="user-1234", metadata={"team": "a"}, parallel_tool_calls=False)
    assert completion.choices[0].message.content == greedy(client).choices[0].message.content  # no effect
