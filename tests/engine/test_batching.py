"""The continuous-batching engine: many requests in one batch, each with its own parameters."""
import threading
from dataclasses import replace

import pytest
import torch

from inference.engine.config import EngineConfig
from inference.engine.engine import Engine
from inference.engine.types import GenerationRequest, SamplingParams

from .helpers import TIMEOUT, Collector, greedy_tokens

GREEDY = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def batch_engine(tiny_model_path):
    # A small token budget forces chunked prefills to share steps with decodes.
    eng = Engine(tiny_model_path, dtype="float32", config=EngineConfig(kv_cache_bytes=32 << 20, max_num_batched_tokens=48))
    eng.start()
    yield eng
    eng.shutdown(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def prompts(batch_engine):
    tok = batch_engine.tokenizer
    return [tok.encode_chat([{"role": "user", "content": "tell me " * k + "about ships"}]) for k in (1, 4, 9, 20, 33, 2)]


def run_all(engine, requests):
    """Submit every (params, prompt) at once; wait for all; return their collectors."""
    collectors = [Collector() for _ in requests]
    for i, ((params, prompt), c) in enumerate(zip(requests, collectors)):
        engine.submit(GenerationRequest(f"b{i}-{id(c)}", list(prompt), params), c)
    for c in collectors:
        c.wait()
    return collectors


def tokens_of(c, index=0):
    return [t for e in c.events if e.index == index for t in e.token_ids]


def test_greedy_output_equals_transformers_for_every_request_of_a_mixed_batch(batch_engine, prompts, hf_model):
    collectors = run_all(batch_engine, [(GREEDY, p) for p in prompts])
    for prompt, c in zip(prompts, collectors):
        assert tokens_of(c) == greedy_tokens(hf_model, prompt, GREEDY.max_tokens)
        assert (c.final.finish_reason, c.final.completion_tokens) == ("length", GREEDY.max_tokens)


def test_a_seeded_request_gives_the_same_output_alone_and_in_any_batch(batch_engine, prompts):
    seeded = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, top_k=50, seed=7, ignore_eos=True)
    alone = run_all(batch_engine, [(seeded, prompts[2])])[0]
    crowd = run_all(batch_engine, [(replace(seeded, seed=s), p) for s, p in enumerate(prompts)]
                    + [(seeded, prompts[2])])[-1]
    assert tokens_of(alone) == tokens_of(crowd)


def test_each_request_keeps_its_own_parameters_in_one_batch(batch_engine, prompts, hf_model):
    reference = greedy_tokens(hf_model, prompts[0], 12)
    forced = 42
    requests = [
        (replace(GREEDY, max_tokens=12), prompts[0]),                                      # plain greedy
        (replace(GREEDY, max_tokens=6, logit_bias={forced: 100.0}), prompts[1]),           # always `forced`
        (replace(GREEDY, max_tokens=30, stop_token_ids=(reference[3],)), prompts[0]),       # stops on a token id
        (replace(GREEDY, max_tokens=9), prompts[3]),                                       # its own length
        (SamplingParams(max_tokens=8, temperature=0.7, seed=3, ignore_eos=True), prompts[4]),
    ]
    plain, biased, stopped, short, sampled = run_all(batch_engine, requests)
    assert tokens_of(plain) == reference
    assert tokens_of(biased) == [forced] * 6
    end = reference.index(reference[3]) + 1  # the first time that token comes
    assert tokens_of(stopped) == reference[:end] and stopped.final.finish_reason == "stop"
    assert stopped.final.completion_tokens == end
    assert short.final.completion_tokens == 9
    assert sampled.final.completion_tokens == 8


def test_min_tokens_holds_back_eos_and_ignore_eos_runs_past_it(batch_engine, prompts, hf_model, monkeypatch):
    reference = greedy_tokens(hf_model, prompts[0], 12)
    monkeypatch.setattr(batch_engine.tokenizer, "eos_token_ids", frozenset({reference[2]}))
    normal, held, ignoring = run_all(batch_engine, [
        (SamplingParams(max_tokens=12, temperature=0), prompts[0]),
        (SamplingParams(max_tokens=12, temperature=0, min_tokens=5), prompts[0]),
        (SamplingParams(max_tokens=12, temperature=0, ignore_eos=True), prompts[0]),
    ])
    assert (normal.final.finish_reason, normal.final.completion_tokens) == ("stop", reference.index(reference[2]) + 1)
    assert held.final.completion_tokens >= 5 and reference[2] not in tokens_of(held)[:4]
    assert (ignoring.final.finish_reason, ignoring.final.completion_tokens) == ("length", 12)
    assert tokens_of(ignoring) == reference


def test_n_choices_share_one_prefill_and_are_counted_together(batch_engine, prompts, monkeypatch):
    prompt = prompts[4]
    computed = []
    real_run = batch_engine.runner.run

    def counting_run(output):
        computed.extend(item.num_new_tokens for item in output.scheduled)
        return real_run(output)

    monkeypatch.setattr(batch_engine.runner, "run", counting_run)
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=11, n=4, ignore_eos=True)
    c = run_all(batch_engine, [(params, prompt)])[0]
    choices = {e.index for e in c.events}
    assert choices == {0, 1, 2, 3}
    outputs = [tokens_of(c, i) for i in range(4)]
    assert all(len(o) == 10 for o in outputs)
    assert len({tuple(o) for o in outputs}) > 1, "choices sample independently"
    assert c.final.completion_tokens == 40
    # The prompt is computed once (less what the prefix cache held from the earlier tests),
    # then each choice decodes its own 9 further tokens.
    assert sum(computed) == len(prompt) - c.final.cached_tokens + 4 * 9
    assert c.final.cached_tokens % batch_engine.config.block_size == 0
    assert [e.choice_finish_reason for e in c.events if e.choice_finish_reason] == ["length"] * 4


def test_logprobs_come_with_up_to_twenty_alternatives(batch_engine, prompts, hf_model):
    with_logprobs, without = run_all(batch_engine, [
        (replace(GREEDY, max_tokens=5, logprobs=20), prompts[1]),
        (replace(GREEDY, max_tokens=5), prompts[2]),
    ])
    entries = [lp for e in with_logprobs.events for lp in e.logprobs]
    assert [lp.token_id for lp in entries] == tokens_of(with_logprobs)
    with torch.inference_mode():
        logits = hf_model(torch.tensor([prompts[1]])).logits[0, -1]
    expected = torch.log_softmax(logits.float(), -1)
    assert entries[0].logprob == pytest.approx(float(expected[entries[0].token_id]), abs=1e-4)
    assert all(len(lp.top) == 20 for lp in entries)
    assert all(lp.top[0][2] >= lp.top[-1][2] for lp in entries)
    assert not any(e.logprobs for e in without.events)


class OnlyTokens:
    """A token mask allowing a fixed set of ids, recording what the engine accepted."""

    def __init__(self, vocab, allowed):
        self.mask = torch.zeros(vocab, dtype=torch.bool)
        self.mask[list(allowed)] = True
        self.accepted = []

    def allowed(self):
        return self.mask

    def accept(self, token_id):
        self.accepted.append(token_id)


def test_a_token_mask_constrains_only_its_own_request(batch_engine, prompts, hf_model):
    vocab = batch_engine.runner.vocab_size
    masks = []

    def factory():
        masks.append(OnlyTokens(vocab, {10, 11, 12}))
        return masks[-1]

    constrained, free = Collector(), Collector()
    batch_engine.submit(GenerationRequest("masked", list(prompts[0]), replace(GREEDY, max_tokens=8), factory),
                        constrained)
    batch_engine.submit(GenerationRequest("free", list(prompts[0]), replace(GREEDY, max_tokens=8)), free)
    constrained.wait(), free.wait()
    assert set(tokens_of(constrained)) <= {10, 11, 12}
    assert masks[0].accepted == tokens_of(constrained)
    assert tokens_of(free) == greedy_tokens(hf_model, prompts[0], 8)


def test_cancelling_frees_the_cache_at_once_with_exact_counts(batch_engine, prompts):
    blocks = batch_engine.scheduler.block_manager
    total = blocks.num_free_blocks
    seen = threading.Event()
    c = Collector(lambda e: e.completion_tokens >= 3 and seen.set())
    batch_engine.submit(GenerationRequest("cancel-me", list(prompts[5]), replace(GREEDY, max_tokens=1000)), c)
    assert seen.wait(TIMEOUT)
    batch_engine.cancel("cancel-me")
    c.wait()
    assert c.final.finish_reason == "cancelled"
    assert c.final.completion_tokens == len(tokens_of(c))
    assert blocks.num_free_blocks == total


def test_a_cache_too_small_for_the_load_queues_and_preempts_but_finishes_everything(tiny_model_path, hf_model):
    # Room for about three sequences of 100 tokens at a time, twelve requests.
    eng = Engine(tiny_model_path, dtype="float32", config=EngineConfig(num_blocks=24, block_size=16, max_num_batched_tokens=64,
                                                     max_model_len=256))
    eng.start()
    try:
        tok = eng.tokenizer
        prompts = [tok.encode_chat([{"role": "user", "content": "sea " * (5 + 3 * i)}]) for i in range(12)]
        collectors = run_all(eng, [(replace(GREEDY, max_tokens=40), p) for p in prompts])
        for prompt, c in zip(prompts, collectors):
            assert tokens_of(c) == greedy_tokens(hf_model, prompt, 40)
        assert eng.scheduler.block_manager.num_free_blocks == 24
    finally:
        eng.shutdown(timeout=TIMEOUT)
