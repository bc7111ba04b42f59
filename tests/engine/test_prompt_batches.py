"""Several prompts in one request (a legacy completion's list of prompts): each is answered as if sent alone, its
choices numbered after the prompts before it, and the request's usage counts them all."""
import uuid

import pytest

from inference.engine.types import FINISH_ERROR, FINISH_LENGTH, GenerationRequest, SamplingParams

from .helpers import Collector


@pytest.fixture(scope="module")
def prompts(chat_tokenizer):
    return [chat_tokenizer.encode_chat([{"role": "user", "content": text}])
            for text in ("What is the capital of France?", "Count to five.", "Name a colour, please, any colour.")]


def run(engine, prompts, params, salt=None):
    collector = Collector()
    first, *more = prompts
    engine.submit(GenerationRequest(f"b-{uuid.uuid4().hex[:8]}", list(first), params,
                                    cache_salt=salt or uuid.uuid4().hex,
                                    more_prompts=tuple(tuple(p) for p in more)), collector)
    return collector.wait()


def per_choice(collector):
    tokens, reasons, scores = {}, {}, {}
    for event in collector.events:
        tokens.setdefault(event.index, []).extend(event.token_ids)
        scores.setdefault(event.index, []).extend(event.prompt_logprobs)
        if event.choice_finish_reason:
            reasons[event.index] = event.choice_finish_reason
    return tokens, reasons, scores


@pytest.mark.parametrize("params", [
    SamplingParams(max_tokens=8, temperature=0, ignore_eos=True),
    SamplingParams(max_tokens=8, temperature=0.9, seed=11, n=2, ignore_eos=True),
], ids=["greedy", "seeded-n2"])
def test_each_prompt_is_answered_as_if_sent_alone(engine, prompts, params):
    batch = run(engine, prompts, params)
    tokens, reasons, _ = per_choice(batch)
    n = params.n
    assert sorted(tokens) == list(range(len(prompts) * n))
    for i, prompt in enumerate(prompts):
        alone, _, _ = per_choice(run(engine, [prompt], params))
        assert [tokens[i * n + j] for j in range(n)] == [alone[j] for j in range(n)], f"prompt {i}"
    assert set(reasons.values()) == {FINISH_LENGTH}
    final = batch.final
    assert final.prompt_tokens == sum(len(p) for p in prompts)
    assert final.completion_tokens == 8 * n * len(prompts)


def test_each_prompt_is_scored_on_its_own_first_choice(engine, prompts):
    batch = run(engine, prompts, SamplingParams(max_tokens=0, prompt_logprobs=1))
    _, reasons, scores = per_choice(batch)
    assert reasons == {0: FINISH_LENGTH, 1: FINISH_LENGTH, 2: FINISH_LENGTH}
    for i, prompt in enumerate(prompts):
        assert [lp.token_id for lp in scores[i]] == list(prompt[1:])
        _, _, alone = per_choice(run(engine, [prompt], SamplingParams(max_tokens=0, prompt_logprobs=1)))
        assert [lp.logprob for lp in scores[i]] == pytest.approx([lp.logprob for lp in alone[0]], abs=1e-5)
    assert batch.final.completion_tokens == 0


def test_prompts_of_one_request_share_their_common_prefix_through_the_cache(engine, chat_tokenizer):
    preamble = [{"role": "system", "content": "Answer in one word. " * 12}]
    prompts = [chat_tokenizer.encode_chat([*preamble, {"role": "user", "content": q}])
               for q in ("Sky colour?", "Grass colour?", "Snow colour?")]
    salt = uuid.uuid4().hex
    run(engine, prompts[:1], SamplingParams(max_tokens=1, temperature=0), salt)
    final = run(engine, prompts, SamplingParams(max_tokens=2, temperature=0), salt).final
    assert final.cached_tokens >= 3 * 16 * ((len(prompts[0]) - 10) // 16)  # the preamble's full blocks, thrice


def test_a_bad_prompt_anywhere_fails_the_whole_request_before_it_runs(engine, prompts):
    final = run(engine, [prompts[0], [10**9]], SamplingParams(max_tokens=4)).final
    assert (final.finish_reason, final.completion_tokens) == (FINISH_ERROR, 0)
    assert "vocabulary" in final.error
