"""Prompt logprobs (SamplingParams.prompt_logprobs): every prompt token after the first scored as transformers
scores it, across prefill chunks and mixed batches, never taken from the prefix cache, never sent twice."""
import threading
import uuid

import pytest
import torch

from inference.engine import prompt_logprobs
from inference.engine.config import EngineConfig
from inference.engine.engine import Engine
from inference.engine.scheduler import ScheduledSeq
from inference.engine.sequence import Sequence
from inference.engine.types import FINISH_LENGTH, GenerationRequest, SamplingParams

from .helpers import TIMEOUT, Collector

TOP = 3


@pytest.fixture(scope="module")
def chunked_engine(tiny_model_path):
    """Prefill chunks of 16 tokens, a cache that keeps prefixes: a 60-token prompt takes four steps."""
    engine = Engine(tiny_model_path, dtype="float32",
                    config=EngineConfig(max_num_batched_tokens=16, kv_cache_bytes=16 << 20,
                                        enable_prefix_caching=True))
    engine.start()
    yield engine
    engine.shutdown(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def long_prompt(chat_tokenizer):
    text = "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill. " * 4
    ids = chat_tokenizer.encode_chat([{"role": "user", "content": text}])
    assert len(ids) > 48
    return ids


def reference(hf_model, prompt):
    """transformers' log-softmax at every position: row p scores prompt[p + 1]."""
    with torch.inference_mode():
        logits = hf_model(torch.tensor([list(prompt)])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


def submit(engine, prompt, params, salt="org"):
    collector = Collector()
    engine.submit(GenerationRequest(f"p-{uuid.uuid4().hex[:8]}", list(prompt), params, cache_salt=salt), collector)
    return collector


def scored(collector):
    return [lp for event in collector.events for lp in event.prompt_logprobs]


def assert_matches(entries, prompt, ref):
    assert [lp.token_id for lp in entries] == list(prompt[1:])
    for p, lp in enumerate(entries):
        row = ref[p]
        assert lp.logprob == pytest.approx(float(row[prompt[p + 1]]), abs=2e-4)
        assert lp.rank == int((row > row[prompt[p + 1]]).sum()) + 1
        top_ids = [t for t, _, _ in lp.top]
        assert top_ids == row.topk(TOP).indices.tolist()
        assert [v for _, _, v in lp.top] == pytest.approx(row.topk(TOP).values.tolist(), abs=2e-4)
        assert lp.token  # the token's text, for echo


def test_every_prompt_token_is_scored_as_transformers_scores_it_across_prefill_chunks(
        chunked_engine, long_prompt, hf_model, monkeypatch):
    monkeypatch.setattr(prompt_logprobs, "SLICE_ROWS", 5)  # slices that do not divide the chunks
    c = submit(chunked_engine, long_prompt, SamplingParams(max_tokens=3, temperature=0, prompt_logprobs=TOP)).wait()
    assert_matches(scored(c), long_prompt, reference(hf_model, long_prompt))
    assert c.final.finish_reason in ("stop", "length")
    assert c.final.completion_tokens >= 1


def test_max_tokens_zero_scores_the_prompt_and_generates_nothing(chunked_engine, long_prompt, hf_model):
    c = submit(chunked_engine, long_prompt, SamplingParams(max_tokens=0, prompt_logprobs=0)).wait()
    entries = scored(c)
    assert len(entries) == len(long_prompt) - 1 and all(lp.top == () for lp in entries)
    ref = reference(hf_model, long_prompt)
    assert entries[-1].logprob == pytest.approx(float(ref[-2][long_prompt[-1]]), abs=2e-4)
    final = c.final
    assert (final.finish_reason, final.completion_tokens, final.prompt_tokens) == \
        (FINISH_LENGTH, 0, len(long_prompt))
    assert not any(e.token_ids or e.text for e in c.events)


def test_max_tokens_zero_without_prompt_logprobs_still_ends_at_once(chunked_engine, long_prompt):
    c = submit(chunked_engine, long_prompt, SamplingParams(max_tokens=0)).wait()
    assert (c.final.finish_reason, c.final.completion_tokens, scored(c)) == (FINISH_LENGTH, 0, [])


def test_a_cached_prompt_is_computed_again_for_its_logprobs_and_still_shared_with_others(
        chunked_engine, chat_tokenizer, hf_model):
    prompt = chat_tokenizer.encode_chat([{"role": "user", "content": "Cache me if you can. " * 8}])
    salt = uuid.uuid4().hex
    plain = SamplingParams(max_tokens=2, temperature=0)
    assert submit(chunked_engine, prompt, plain, salt).wait().final.cached_tokens == 0
    c = submit(chunked_engine, prompt, SamplingParams(max_tokens=2, temperature=0, prompt_logprobs=TOP), salt).wait()
    assert c.final.cached_tokens == 0  # every position computed: the logprobs need them
    assert_matches(scored(c), prompt, reference(hf_model, prompt))
    assert submit(chunked_engine, prompt, plain, salt).wait().final.cached_tokens > 0


def test_choices_share_one_scoring_of_the_prompt(chunked_engine, long_prompt):
    c = submit(chunked_engine, long_prompt, SamplingParams(max_tokens=4, temperature=1.0, seed=3, n=3,
                                                           prompt_logprobs=1)).wait()
    assert [lp.token_id for lp in scored(c)] == list(long_prompt[1:])
    assert {e.index for e in c.events if e.token_ids} == {0, 1, 2}


def test_scoring_one_request_changes_nothing_for_those_batched_with_it(chunked_engine, long_prompt, prompt_ids):
    greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    alone = submit(chunked_engine, prompt_ids, greedy, uuid.uuid4().hex).wait()
    gate = threading.Event()
    batched = Collector(lambda e: gate.set())
    chunked_engine.submit(GenerationRequest("batched", list(prompt_ids), greedy, cache_salt=uuid.uuid4().hex),
                          batched)
    scoring = submit(chunked_engine, long_prompt, SamplingParams(max_tokens=5, temperature=0, prompt_logprobs=2))
    batched.wait(), scoring.wait()
    assert [t for e in batched.events for t in e.token_ids] == [t for e in alone.events for t in e.token_ids]
    assert len(scored(scoring)) == len(long_prompt) - 1


def test_a_recomputed_prefill_does_not_score_the_same_tokens_twice():
    seq = Sequence("r", list(range(10)), SamplingParams(prompt_logprobs=0))
    assert [(s.row, s.first, s.count) for s in prompt_logprobs.plan([ScheduledSeq(seq, 0, 4, False)])] == \
        [(0, 0, 4)]
    seq.num_prompt_logprobs = 6  # scored up to the token at position 6, then preempted
    assert prompt_logprobs.plan([ScheduledSeq(seq, 0, 4, False)]) == []
    spans = prompt_logprobs.plan([ScheduledSeq(seq, 4, 6, True)])
    assert [(s.row, s.first, s.count) for s in spans] == [(2, 6, 3)]  # positions 6..8 score tokens 7..9
    seq.num_prompt_logprobs = 9
    assert not seq.scores_prompt and prompt_logprobs.plan([ScheduledSeq(seq, 4, 6, True)]) == []
    child = Sequence("r", list(range(10)), SamplingParams(prompt_logprobs=0, n=2), index=1)
    assert not child.scores_prompt  # a fork recomputing its prefix scores nothing


def test_int4_weights_score_a_short_prompt_with_the_exact_output_layer(tiny_model_path, chat_tokenizer):
    """An int4 output layer refines only its most likely tokens for sampling; a prompt token's logprob needs every
    token's logit: a short prompt (as few rows as the refined path takes) scores as the same tokens do inside a
    longer prompt (the dense path)."""
    from inference.engine.linear import RefinedHead

    engine = Engine(tiny_model_path, dtype="bfloat16", quantization="int4",
                    config=EngineConfig(kv_cache_bytes=16 << 20, enable_prefix_caching=False))
    engine.start()
    try:
        assert isinstance(engine.runner.decoder.lm_head, RefinedHead)
        long = chat_tokenizer.encode_chat([{"role": "user", "content": "Tell me a long story about the sea. " * 3}])
        short = long[:6]  # 5 scored rows: the refined head's side of its threshold
        params = SamplingParams(max_tokens=0, prompt_logprobs=0)
        alone = [lp.logprob for lp in scored(submit(engine, short, params).wait())]
        inside = [lp.logprob for lp in scored(submit(engine, long, params).wait())][:5]
        assert alone == pytest.approx(inside, abs=5e-3)  # bf16 matmuls of other shapes: 2e-3 apart; int4 tail: 3e-2
    finally:
        engine.shutdown(timeout=TIMEOUT)
