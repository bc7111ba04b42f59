"""The prefix cache through the engine: a session's next turn and a shared preamble are not computed twice."""
import pytest

from inference.engine.config import EngineConfig
from inference.engine.engine import Engine
from inference.engine.types import GenerationRequest, SamplingParams

from .helpers import TIMEOUT, Collector

GREEDY = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module", params=[True, False], ids=["cache-on", "cache-off"])
def engine_pair(request, tiny_model_path):
    engine = Engine(tiny_model_path, dtype="float32",
                    config=EngineConfig(kv_cache_bytes=16 << 20, enable_prefix_caching=request.param))
    engine.start()
    yield request.param, engine
    engine.shutdown(timeout=TIMEOUT)


def ask(engine, prompt, *, salt="org-1", params=GREEDY):
    c = Collector()
    engine.submit(GenerationRequest(f"r{id(c)}", list(prompt), params, cache_salt=salt), c)
    c.wait()
    return [t for e in c.events for t in e.token_ids], c.final


def session_turns(engine):
    """Three turns of one conversation; each turn's prompt holds the previous ones and their answers."""
    tok = engine.tokenizer
    history, results = [{"role": "system", "content": "You are a helpful assistant. " * 3}], []
    for question in ("Tell me about the sea.", "And the stars?", "Thank you!"):
        history.append({"role": "user", "content": question})
        prompt = tok.encode_chat(history)
        tokens, final = ask(engine, prompt)
        history.append({"role": "assistant", "content": tok.decode(tokens)})
        results.append((prompt, tokens, final.cached_tokens))
    return results


@pytest.fixture(scope="module")
def reference_turns(tiny_model_path):
    engine = Engine(tiny_model_path, dtype="float32",
                    config=EngineConfig(kv_cache_bytes=16 << 20, enable_prefix_caching=False))
    engine.start()
    try:
        return session_turns(engine)
    finally:
        engine.shutdown(timeout=TIMEOUT)


def test_a_session_gets_the_same_answers_and_its_later_turns_come_mostly_from_the_cache(engine_pair,
                                                                                      reference_turns):
    caching, engine = engine_pair
    turns = session_turns(engine)
    assert [(p, t) for p, t, _ in turns] == [(p, t) for p, t, _ in reference_turns]
    first, *later = [cached for _, _, cached in turns]
    assert first == 0
    if caching:
        for (prompt, _, cached), (previous, _, _) in zip(turns[1:], turns):
            # Every full block of the earlier turn's prompt is reused (the answer's tokens may be
            # spelled differently once decoded and encoded again).
            assert cached >= len(previous) // 16 * 16 - 16 and cached % 16 == 0 and cached < len(prompt)
    else:
        assert later == [0, 0]


def test_a_shared_preamble_is_computed_once_per_organization(engine_pair):
    caching, engine = engine_pair
    tok = engine.tokenizer
    preamble = [{"role": "system", "content": "Answer in the style of a sailor. " * 6}]
    prompts = [tok.encode_chat(preamble + [{"role": "user", "content": q}]) for q in ("Hi", "Ahoy", "Bye")]
    reports = [ask(engine, p, salt="org-shared")[1].cached_tokens for p in prompts]
    other_org = ask(engine, prompts[0], salt="org-other")[1].cached_tokens
    if caching:
        assert reports[0] == 0 and min(reports[1:]) >= 64 and other_org == 0
    else:
        assert reports == [0, 0, 0] and other_org == 0


def test_a_prompt_cached_from_an_n_way_request_serves_the_next_one(engine_pair):
    caching, engine = engine_pair
    prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "pick a number " * 8}])
    params = SamplingParams(max_tokens=5, temperature=1.0, seed=3, n=3, ignore_eos=True)
    _, first = ask(engine, prompt, params=params, salt="org-n")
    _, second = ask(engine, prompt, params=params, salt="org-n")
    assert first.completion_tokens == second.completion_tokens == 15
    assert (second.cached_tokens > 0) == caching and first.cached_tokens == 0
