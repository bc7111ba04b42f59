import threading
from dataclasses import replace

import pytest

from inference.engine.engine import Engine
from inference.engine.types import GenerationRequest, SamplingParams
from tests.poll import wait_until

from .helpers import TIMEOUT, Collector, greedy_tokens, until_eos

GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


@pytest.fixture
def no_eos(engine, monkeypatch):
    """Random tiny weights may sample EOS anywhere; tests about other endings turn it off."""
    monkeypatch.setattr(engine.tokenizer, "eos_token_ids", frozenset())


def blocking_callback(started: threading.Event, release: threading.Event):
    """Holds the engine thread inside the first event until released."""

    def on_event(event):
        if not started.is_set():
            started.set()
            assert release.wait(TIMEOUT)

    return on_event


def test_exactly_one_final_event(run_request, prompt_ids):
    for params in [
        GREEDY,
        SamplingParams(max_tokens=12, seed=5),
        SamplingParams(max_tokens=0),
        replace(GREEDY, stop=(" ",)),
    ]:
        c = run_request(prompt_ids, params)
        c.final  # asserts exactly one, and that it is last
        assert all(e.prompt_tokens == len(prompt_ids) for e in c.events)
        assert all(e.text or e.token_ids for e in c.events[:-1]), "non-final events carry tokens"


def test_streamed_text_and_counts_match_the_greedy_tokens(run_request, hf_model, chat_tokenizer, prompt_ids):
    tokens = until_eos(greedy_tokens(hf_model, prompt_ids, GREEDY.max_tokens), chat_tokenizer.eos_token_ids)
    c = run_request(prompt_ids, GREEDY)
    assert c.final.completion_tokens == len(tokens)
    assert c.text == chat_tokenizer.decode(tokens)
    counts = [e.completion_tokens for e in c.events]
    assert counts == sorted(counts)


def test_same_seed_gives_same_output(run_request, prompt_ids):
    params = SamplingParams(max_tokens=20, temperature=0.8, top_p=0.95, seed=99)
    first, second = run_request(prompt_ids, params), run_request(prompt_ids, params)
    assert first.text == second.text
    assert first.final.completion_tokens == second.final.completion_tokens


def test_max_tokens_ends_with_length(run_request, prompt_ids, no_eos):
    c = run_request(prompt_ids, SamplingParams(max_tokens=5, seed=0))
    assert (c.final.finish_reason, c.final.completion_tokens) == ("length", 5)


def test_eos_ends_with_stop_and_is_counted(engine, run_request, hf_model, chat_tokenizer, prompt_ids, monkeypatch):
    tokens = greedy_tokens(hf_model, prompt_ids, 10)
    fake_eos = tokens[3]
    end = tokens.index(fake_eos)
    monkeypatch.setattr(engine.tokenizer, "eos_token_ids", frozenset({fake_eos}))
    c = run_request(prompt_ids, GREEDY)
    assert (c.final.finish_reason, c.final.completion_tokens) == ("stop", end + 1)
    assert c.text == chat_tokenizer.decode(tokens[:end])


def test_stop_string_ends_generation_and_is_never_emitted(run_request, hf_model, chat_tokenizer, prompt_ids, no_eos):
    tokens = greedy_tokens(hf_model, prompt_ids, GREEDY.max_tokens)
    full = chat_tokenizer.decode(tokens)
    start = next(i for i in range(len(full) // 3, len(full)) if "\ufffd" not in full[i : i + 3])
    stop = full[start : start + 3]
    needed = next(k for k in range(1, len(tokens) + 1) if stop in chat_tokenizer.decode(tokens[:k]))
    c = run_request(prompt_ids, replace(GREEDY, stop=(stop,)))
    assert (c.final.finish_reason, c.final.completion_tokens) == ("stop", needed)
    assert c.text == full[: full.index(stop)]


def test_request_beyond_context_window_stops_at_the_window(engine, run_request, chat_tokenizer, no_eos):
    window = chat_tokenizer.context_window
    prompt = chat_tokenizer.encode("the")[:1] * (window - 4)
    c = run_request(prompt, SamplingParams(max_tokens=100, seed=0))
    assert (c.final.finish_reason, c.final.completion_tokens) == ("length", 4)
    assert c.final.prompt_tokens == window - 4


def test_prompt_longer_than_window_ends_with_length_and_no_tokens(engine, run_request, prompt_ids, monkeypatch):
    monkeypatch.setattr(engine.config, "max_model_len", len(prompt_ids) - 1)
    c = run_request(prompt_ids, SamplingParams(max_tokens=10, seed=0))
    assert (c.final.finish_reason, c.final.completion_tokens, c.text) == ("length", 0, "")


def test_cancel_ends_with_exact_counts(engine, prompt_ids, no_eos):
    at_cancel = []

    def cancel_on_first_text(event):
        if not event.finished and not at_cancel:
            at_cancel.append(event.completion_tokens)
            engine.cancel("to-cancel")

    c = Collector(cancel_on_first_text)
    engine.submit(GenerationRequest("to-cancel", prompt_ids, SamplingParams(max_tokens=1000, seed=0)), c)
    c.wait()
    assert c.final.finish_reason == "cancelled"
    assert c.final.completion_tokens == at_cancel[0]
    assert c.final.prompt_tokens == len(prompt_ids)


def test_cancel_from_another_thread_stops_promptly(engine, prompt_ids, no_eos):
    first = threading.Event()
    c = Collector(lambda e: first.set())
    engine.submit(GenerationRequest("cross-thread", prompt_ids, SamplingParams(max_tokens=1500, seed=1)), c)
    assert first.wait(TIMEOUT)
    engine.cancel("cross-thread")
    c.wait()
    assert c.final.finish_reason == "cancelled"
    assert 1 <= c.final.completion_tokens < 1500


def test_cancelled_queued_request_ends_before_the_running_one(engine, prompt_ids, no_eos):
    started, release = threading.Event(), threading.Event()
    finals = []
    running = Collector(blocking_callback(started, release))
    queued = Collector(lambda e: e.finished and finals.append("queued"))
    engine.submit(GenerationRequest("running", prompt_ids, SamplingParams(max_tokens=40, seed=0)), running)
    assert started.wait(TIMEOUT)
    engine.submit(GenerationRequest("queued", prompt_ids, SamplingParams(max_tokens=40, seed=0)), queued)
    engine.cancel("queued")
    release.set()
    queued.wait()
    running.wait()
    finals.append("running")
    assert finals == ["queued", "running"]
    assert (queued.final.finish_reason, queued.final.completion_tokens) == ("cancelled", 0)
    assert queued.final.prompt_tokens == len(prompt_ids)
    assert (running.final.finish_reason, running.final.completion_tokens) == ("length", 40)


def test_requests_run_in_submission_order(engine, prompt_ids):
    order = []
    collectors = []
    for i in range(3):
        c = Collector(lambda e, i=i: e.finished and order.append(i))
        collectors.append(c)
        engine.submit(GenerationRequest(f"fifo-{i}", prompt_ids, SamplingParams(max_tokens=4, seed=i)), c)
    for c in collectors:
        c.wait()
    assert order == [0, 1, 2]


def test_submit_is_thread_safe(engine, prompt_ids):
    collectors = [Collector() for _ in range(8)]

    def submit(i):
        engine.submit(GenerationRequest(f"t-{i}", prompt_ids, SamplingParams(max_tokens=3, seed=i)), collectors[i])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in collectors:
        assert c.wait().final.completion_tokens <= 3


def test_engine_survives_callback_error(run_request, prompt_ids):
    calls = []

    def explode(event):
        calls.append(event)
        raise RuntimeError("client went away")

    broken = run_request(prompt_ids, SamplingParams(max_tokens=8, seed=0), on_event=explode)
    assert broken.final.finish_reason in ("stop", "length")
    assert len(calls) == len(broken.events)
    assert run_request(prompt_ids, GREEDY).final.finish_reason in ("stop", "length")


def test_model_error_ends_with_error_and_exact_counts(engine, run_request, prompt_ids, monkeypatch, no_eos):
    real_run = engine.runner.run
    calls = []

    def failing_run(output):
        calls.append(1)
        if len(calls) == 4:  # prefill + 2 decodes have produced 3 tokens
            raise RuntimeError("device fell over")
        return real_run(output)

    monkeypatch.setattr(engine.runner, "run", failing_run)
    c = run_request(prompt_ids, SamplingParams(max_tokens=10, seed=0))
    assert (c.final.finish_reason, c.final.completion_tokens) == ("error", 3)
    assert "device fell over" in c.final.error


@pytest.mark.parametrize("prompt", [[], [1, 10**6]])
def test_invalid_prompt_ends_with_error_and_engine_keeps_serving(run_request, prompt_ids, prompt):
    c = run_request(prompt, GREEDY)
    assert (c.final.finish_reason, c.final.completion_tokens) == ("error", 0)
    assert c.final.error
    assert run_request(prompt_ids, GREEDY).final.finish_reason in ("stop", "length")


def test_shutdown_cancels_running_and_pending_requests(tiny_model_path, prompt_ids):
    eng = Engine(tiny_model_path, dtype="float32")
    eng.tokenizer.eos_token_ids = frozenset()
    eng.start()
    started, release = threading.Event(), threading.Event()
    running = Collector(blocking_callback(started, release))
    eng.submit(GenerationRequest("a", prompt_ids, SamplingParams(max_tokens=500, seed=0)), running)
    assert started.wait(TIMEOUT)
    pending = [Collector(), Collector()]
    for i, c in enumerate(pending):
        eng.submit(GenerationRequest(f"p{i}", prompt_ids, SamplingParams(max_tokens=5)), c)
    stopper = threading.Thread(target=eng.shutdown)
    stopper.start()
    try:
        wait_until(lambda: eng._stopping, timeout=TIMEOUT, interval=0.01, message="the engine to begin stopping")
    finally:
        release.set()
    stopper.join(TIMEOUT)
    assert not stopper.is_alive()
    assert running.wait().final.finish_reason == "cancelled"
    assert 1 <= running.final.completion_tokens < 500
    for c in pending:
        assert (c.wait().final.finish_reason, c.final.completion_tokens) == ("cancelled", 0)
    with pytest.raises(RuntimeError):
        eng.submit(GenerationRequest("late", prompt_ids, GREEDY), Collector())


def test_shutdown_before_start_cancels_queued_requests(tiny_model_path, prompt_ids):
    eng = Engine(tiny_model_path, dtype="float32")
    c = Collector()
    eng.submit(GenerationRequest("never-run", prompt_ids, GREEDY), c)
    eng.shutdown()
    assert (c.wait().final.finish_reason, c.final.completion_tokens) == ("cancelled", 0)


def test_max_model_len_shortens_the_window_and_past_the_models_own_is_refused(tiny_model_path, chat_tokenizer):
    from inference.engine.config import EngineConfig

    with pytest.raises(ValueError, match=f"longer than the context window .*{chat_tokenizer.context_window} tokens"):
        Engine(tiny_model_path, dtype="float32", config=EngineConfig(
            kv_cache_bytes=16 << 20, max_model_len=chat_tokenizer.context_window + 1))
    eng = Engine(tiny_model_path, dtype="float32", config=EngineConfig(kv_cache_bytes=16 << 20, max_model_len=64))
    eng.tokenizer.eos_token_ids = frozenset()
    eng.start()
    try:
        assert eng.tokenizer.context_window == 64  # what the API checks prompts against (a worker's heartbeat says it)
        c = Collector()
        eng.submit(GenerationRequest("w", chat_tokenizer.encode("the")[:1] * 60, SamplingParams(max_tokens=50)), c)
        assert (c.wait().final.finish_reason, c.final.completion_tokens) == ("length", 4)
    finally:
        eng.shutdown()


def test_a_step_that_hangs_is_seen_from_other_threads_with_where_it_hangs(engine, prompt_ids):
    started, release = threading.Event(), threading.Event()
    assert engine.stalled_for() == 0.0  # idle
    c = Collector(blocking_callback(started, release))
    engine.submit(GenerationRequest("hangs", prompt_ids, SamplingParams(max_tokens=4, temperature=0.0)), c)
    try:
        assert started.wait(TIMEOUT)
        first = engine.stalled_for()
        wait_until(lambda: engine.stalled_for() >= first + 0.2, timeout=5, message="the stall to grow")
        stack = engine.thread_stack()
        assert "_step" in stack and "on_event" in stack  # the engine's thread, held in the callback
    finally:
        release.set()
    c.wait()
    assert c.final.finish_reason == "length"
    wait_until(lambda: engine.stalled_for() == 0.0, timeout=5, message="no step under way")
