"""Dedicated inference workers behind the API, through Redis Streams, with real processes.

Everything goes through the official OpenAI SDK (or raw HTTP) against the live server; the workers
are `manage.py inference_worker --model tiny-chat` subprocesses; Redis is a real redis-server.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import openai
import pytest

from billing.models import Hold, LedgerEntry, UsageRecord
from billing.selectors import ledger_sum_micro
from inference.availability import NoCapacity
from inference.engine.types import GenerationRequest, SamplingParams, TokenEvent, TokenLogprob
from inference.queue import protocol
from inference.queue.backend import RedisBackend
from tests.api.conftest import TINY, TINY_GREEDY, stream_then_disconnect, tiny_cost, wait_for_usage
from tests.poll import wait_until
from tests.workers.conftest import ROOT

LONG = [{"role": "user", "content": "Tell me a long story about the sea and the ships."}]
HELLO = [{"role": "user", "content": "Say hello to the world."}]
CREDIT = 1_000_000


def account_state(org):
    account = org.credit_account
    account.refresh_from_db()
    assert ledger_sum_micro(account=account) == account.balance_micro
    return account


def assert_settled_exactly(org, records):
    """No hold left, the ledger adds up, and the balance moved by exactly the records' costs."""
    assert not Hold.objects.filter(status=Hold.Status.ACTIVE).exists()
    account = account_state(org)
    assert account.held_micro == 0
    assert CREDIT - account.balance_micro == sum(r.cost_micro for r in records)
    for r in records:
        if r.status == "failed":  # the prompt, cached part included, is not charged
            assert r.cost_micro == r.completion_tokens * 2, r
        else:  # prompt tokens the worker's prefix cache held cost half
            assert r.cost_micro == tiny_cost(r.prompt_tokens, r.completion_tokens, r.cached_tokens), r


def claimed_by(rds, request_id: str, timeout: float = 30) -> str:
    return wait_until(lambda: rds.get(protocol.claim_key(request_id)), timeout=timeout,
                      message=f"{request_id} to be claimed")


def worker_events(rds, request_id: str) -> list[TokenEvent]:
    entries = rds.xrange(protocol.events_key(request_id))
    return [protocol.decode_event(f["event"]) for _, f in entries if f.get("kind") == protocol.KIND_EVENT]


class StreamReader(threading.Thread):
    """Consumes one SDK stream in the background and records what the client saw."""

    def __init__(self, client, **params):
        super().__init__(daemon=True)
        self.client = client
        self.params = params
        self.request_id = None
        self.contents = 0
        self.text = ""
        self.finish_reason = None
        self.usage = None
        self.error = None
        self.started_event = threading.Event()

    def run(self):
        try:
            stream = self.client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                         **self.params)
            self.request_id = stream.response.headers["x-request-id"]
            self.started_event.set()
            for chunk in stream:
                if chunk.choices:
                    if chunk.choices[0].delta.content:
                        self.contents += 1
                        self.text += chunk.choices[0].delta.content
                    if chunk.choices[0].finish_reason:
                        self.finish_reason = chunk.choices[0].finish_reason
                if chunk.usage:
                    self.usage = chunk.usage
        except openai.APIError as exc:
            self.error = exc
        finally:
            self.started_event.set()


# -- the protocol, without Redis ---------------------------------------------------------------


def test_requests_and_events_survive_the_trip_through_json():
    params = SamplingParams(max_tokens=7, temperature=0.5, top_p=0.9, top_k=5, min_p=0.1, presence_penalty=0.5,
                            frequency_penalty=-0.5, repetition_penalty=1.1, logit_bias={3: -100.0, 9: 2.5},
                            seed=42, stop=("\n\n", "END"), stop_token_ids=(2, 5), include_stop_str_in_output=True,
                            min_tokens=2, ignore_eos=True, n=2, logprobs=3, skip_special_tokens=False,
                            prompt_logprobs=2)
    request = GenerationRequest("chatcmpl-1", [1, 2, 3], params, more_prompts=((4, 5), (6,)))
    again = protocol.decode_request(protocol.encode_request(request))
    assert again == request and again.num_prompt_tokens == 6
    assert protocol.decode_request(protocol.encode_request(GenerationRequest("r", [1], SamplingParams()))).params \
        == SamplingParams()
    event = TokenEvent("chatcmpl-1", text="héllo", index=1, token_ids=(4, 5),
                       logprobs=(TokenLogprob(4, "h", -0.5, ((4, "h", -0.5), (6, "x", -1.5))),
                                 TokenLogprob(5, "éllo", float("-inf"))),
                       prompt_logprobs=(TokenLogprob(2, "<|im_start|>", -3.25, ((7, "a", -0.1),), rank=9),),
                       choice_finish_reason="stop", finished=True, finish_reason="error", prompt_tokens=3,
                       completion_tokens=2, error="boom", error_code="worker_lost")
    assert protocol.decode_event(protocol.encode_event(event)) == event
    assert protocol.decode_event(protocol.encode_event(TokenEvent("r"))) == TokenEvent("r")


def test_what_cannot_cross_a_process_boundary_is_refused():
    with pytest.raises(ValueError, match="token_mask_factory"):
        protocol.encode_request(GenerationRequest("r", [1], SamplingParams(), token_mask_factory=lambda: None))
    raw = json.dumps({"request_id": "r", "prompt_token_ids": [1], "params": {"max_tokens": 3, "beam_width": 4}})
    with pytest.raises(ValueError, match="beam_width"):
        protocol.decode_request(raw)
    raw = json.dumps({"request_id": "r", "prompt_token_ids": [1], "params": {}, "images": ["x"]})
    with pytest.raises(ValueError, match="images"):  # a request this worker would answer differently
        protocol.decode_request(raw)
    raw = json.dumps({"request_id": "r", "prompt_token_ids": [1], "params": {}, "more_prompts": [[1, "2"]]})
    with pytest.raises(ValueError, match="more_prompts"):
        protocol.decode_request(raw)


def test_the_worker_and_the_protocol_do_not_import_django():
    code = ("import sys, inference.queue.worker, inference.queue.protocol;"
            "sys.exit('django imported' if 'django' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_the_worker_command_refuses_unknown_models_and_a_missing_queue(models_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "INFERENCE_QUEUE_URL")}
    env.update(MODELS_FILE=models_file, DATA_DIR=str(tmp_path), HF_HUB_OFFLINE="1")
    command = [sys.executable, "manage.py", "inference_worker", "--model"]
    result = subprocess.run([*command, TINY], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 1 and "INFERENCE_QUEUE_URL" in result.stderr
    env.update(INFERENCE_QUEUE_URL="redis://127.0.0.1:1/0", SECRET_KEY="x")
    result = subprocess.run([*command, "gpt-nope"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 1 and "Unknown model 'gpt-nope'" in result.stderr and TINY in result.stderr


# -- the backend against Redis, without workers --------------------------------------------------


def fake_worker(rds, model: str, worker: str = "fake-worker", ttl_ms: int = 30_000):
    rds.set(protocol.heartbeat_key(model, worker), json.dumps({"worker": worker, "pid": 0}), px=ttl_ms)
    rds.zadd(protocol.workers_key(model), {worker: int(time.time() * 1000)})


async def test_the_queue_limit_is_enforced_atomically_and_unclaimed_requests_are_withdrawn(redis_url, rds):
    model = "queue-test-model"
    spec = SimpleNamespace(id=model)
    backend = RedisBackend(redis_url, queue_limit=2, claim_timeout=0.3, block_ms=100)
    with pytest.raises(NoCapacity) as raised:
        await backend.enqueue(spec, GenerationRequest("q0", [1, 2], SamplingParams()))
    assert raised.value.code == "no_worker" and raised.value.retry_after > 0
    fake_worker(rds, model)
    try:
        await backend.enqueue(spec, GenerationRequest("q1", [1, 2], SamplingParams()))
        await backend.enqueue(spec, GenerationRequest("q2", [1, 2, 3], SamplingParams()))
        with pytest.raises(NoCapacity) as raised:
            await backend.enqueue(spec, GenerationRequest("q3", [1], SamplingParams()))
        assert raised.value.code == "queue_full"
        assert rds.xlen(protocol.requests_key(model)) == 2

        events = [e async for e in backend.generate(spec, GenerationRequest("q1", [1, 2], SamplingParams()))]
        assert [(e.finished, e.finish_reason, e.error_code, e.prompt_tokens, e.completion_tokens) for e in events] \
            == [(True, "error", "not_claimed", 2, 0)]
        assert rds.get(protocol.claim_key("q1")) == protocol.CLAIM_ABANDONED

        backend.claim_timeout = 30
        followed = backend.generate(spec, GenerationRequest("q2", [1, 2, 3], SamplingParams()))
        backend.cancel(spec, "q2")  # before any worker took it: withdrawn at once
        events = [e async for e in followed]
        assert [(e.finish_reason, e.completion_tokens) for e in events] == [("cancelled", 0)]
        assert rds.xlen(protocol.requests_key(model)) == 0  # both withdrawn from the queue
        assert rds.exists(protocol.cancel_key("q2"))
    finally:
        rds.delete(protocol.requests_key(model), protocol.workers_key(model),
                   protocol.heartbeat_key(model, "fake-worker"))


# -- through the API and real workers -------------------------------------------------------------


@pytest.mark.money
def test_a_completion_and_a_stream_are_served_by_workers_and_charged_exactly(client, alice, workers, worker_pool,
                                                                              rds):
    ids = {worker_pool.worker_id(proc) for proc in workers}
    completion = client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=12, temperature=0)
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 12
    assert claimed_by(rds, completion.id) in ids

    reader = StreamReader(client, model=TINY, messages=HELLO, max_tokens=12, temperature=0)
    reader.run()
    assert reader.error is None
    assert reader.text == completion.choices[0].message.content  # same model, same greedy answer
    assert reader.finish_reason == completion.choices[0].finish_reason
    assert reader.usage.completion_tokens == completion.usage.completion_tokens
    assert claimed_by(rds, reader.request_id) in ids

    records = [wait_for_usage(completion.id), wait_for_usage(reader.request_id)]
    assert [(r.status, r.prompt_tokens, r.completion_tokens) for r in records] == [
        ("completed", completion.usage.prompt_tokens, completion.usage.completion_tokens),
        ("completed", reader.usage.prompt_tokens, reader.usage.completion_tokens)]
    assert_settled_exactly(alice, records)


@pytest.mark.money
def test_a_prompt_scored_by_a_worker_comes_back_whole(client, alice, workers, worker_pool, rds):
    prompt = "One, two, three, four, five, six"
    scored = client.completions.create(model=TINY, prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    lp = scored.choices[0].logprobs
    assert scored.choices[0].text == prompt and len(lp.tokens) == scored.usage.prompt_tokens > 3
    assert lp.token_logprobs[0] is None and all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert claimed_by(rds, scored.id) in {worker_pool.worker_id(proc) for proc in workers}
    vllm = client.completions.create(model=TINY, prompt=prompt, max_tokens=1, extra_body={"prompt_logprobs": 0})
    entries = vllm.choices[0].model_extra["prompt_logprobs"]
    assert [next(iter(e.values()))["logprob"] for e in entries[1:]] == pytest.approx(lp.token_logprobs[1:], abs=1e-5)
    assert all(next(iter(e.values()))["rank"] >= 1 for e in entries[1:])
    batch = client.completions.create(model=TINY, prompt=["Seven, eight", prompt], max_tokens=0, echo=True,
                                      logprobs=1)
    assert [c.text for c in batch.choices] == ["Seven, eight", prompt]
    assert batch.choices[1].logprobs.token_logprobs[1:] == pytest.approx(lp.token_logprobs[1:], abs=1e-5)
    assert batch.usage.prompt_tokens > scored.usage.prompt_tokens
    assert_settled_exactly(alice, [wait_for_usage(r.id) for r in (scored, vllm, batch)])


@pytest.mark.money
def test_concurrent_streams_spread_over_both_workers(client, alice, workers, worker_pool, rds):
    readers = [StreamReader(client, model=TINY, messages=LONG, max_tokens=120, temperature=0) for _ in range(4)]
    for r in readers:
        r.start()
    for r in readers:
        r.join(timeout=60)
        assert not r.is_alive()
    assert [r.error for r in readers] == [None] * 4
    assert all(r.finish_reason in ("stop", "length") for r in readers)
    assert len({r.text for r in readers}) == 1  # greedy: the same answer from either worker
    serving = {claimed_by(rds, r.request_id) for r in readers}
    assert serving == {worker_pool.worker_id(proc) for proc in workers}
    records = [wait_for_usage(r.request_id) for r in readers]
    assert all(rec.status == "completed" and rec.completion_tokens == r.usage.completion_tokens
               for rec, r in zip(records, readers))
    assert_settled_exactly(alice, records)


@pytest.mark.money
def test_without_a_live_worker_the_api_answers_503_at_once_and_charges_nothing(client, alice, queue, rds, http,
                                                                                 alice_secret):
    assert not rds.zrange(protocol.workers_key(TINY_GREEDY), 0, -1)  # nobody serves this model
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model=TINY_GREEDY, messages=HELLO, max_tokens=5)
    assert time.monotonic() - started < 3
    assert raised.value.status_code == 503 and raised.value.body["code"] == "no_worker"
    assert int(raised.value.response.headers["retry-after"]) > 0
    response = http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {alice_secret}"},
                         json={"model": TINY_GREEDY, "messages": HELLO, "max_tokens": 5, "stream": True})
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"]["code"] == "no_worker"
    assert not Hold.objects.exists() and not UsageRecord.objects.exists()
    assert account_state(alice).balance_micro == CREDIT


def test_prompts_are_checked_against_the_smallest_window_the_live_workers_give_the_model(client, alice, queue, rds):
    """A worker started with --max-model-len (or whose KV cache holds less than the model's window) says its window
    in its heartbeat: the API refuses what it could not run, before anything is held or queued."""
    for worker, window in (("wide", 2048), ("narrow", 64)):
        rds.set(protocol.heartbeat_key(TINY_GREEDY, worker), json.dumps({"worker": worker, "context_window": window}),
                px=30_000)
        rds.zadd(protocol.workers_key(TINY_GREEDY), {worker: int(time.time() * 1000)})
    queue._windows.clear()  # what this process learnt of the workers in the last second
    try:
        long = [{"role": "user", "content": "the sea " * 40}]
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model=TINY_GREEDY, messages=long, max_tokens=5)
        assert raised.value.body["code"] == "context_length_exceeded"
        assert "maximum context length is 64 tokens" in raised.value.body["message"]
        assert not rds.xlen(protocol.requests_key(TINY_GREEDY)) and not Hold.objects.exists()
    finally:
        rds.delete(protocol.workers_key(TINY_GREEDY), protocol.heartbeat_key(TINY_GREEDY, "wide"),
                   protocol.heartbeat_key(TINY_GREEDY, "narrow"))
        queue._windows.clear()


async def test_without_workers_the_window_is_the_models_own_and_it_is_asked_at_most_once_a_second(redis_url, rds):
    backend = RedisBackend(redis_url)
    spec, tokenizer = SimpleNamespace(id="window-model"), SimpleNamespace(context_window=8192)
    try:
        assert await backend.context_window(spec, tokenizer) == 8192
        fake_worker(rds, "window-model", "w1")
        rds.set(protocol.heartbeat_key("window-model", "w1"), json.dumps({"worker": "w1", "context_window": 4096}))
        assert await backend.context_window(spec, tokenizer) == 8192  # known for a second
        time.sleep(1.05)
        assert await backend.context_window(spec, tokenizer) == 4096
        assert await backend.context_window(spec, SimpleNamespace(context_window=1024)) == 1024
    finally:
        rds.delete(protocol.workers_key("window-model"), protocol.heartbeat_key("window-model", "w1"))


@pytest.mark.money
def test_a_full_queue_is_503_and_a_request_nobody_takes_ends_cleanly(client, alice, queue, rds, settings,
                                                                      monkeypatch):
    fake_worker(rds, TINY_GREEDY)  # beats, but never reads its stream
    try:
        settings.INFERENCE_QUEUE_LIMIT = 2
        for _ in range(2):
            rds.xadd(protocol.requests_key(TINY_GREEDY), {"request": "{}", "claim_timeout_ms": "1"})
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model=TINY_GREEDY, messages=HELLO, max_tokens=5)
        assert raised.value.status_code == 503 and raised.value.body["code"] == "queue_full"
        assert int(raised.value.response.headers["retry-after"]) > 0
        assert not Hold.objects.exists() and not UsageRecord.objects.exists()

        rds.delete(protocol.requests_key(TINY_GREEDY))
        monkeypatch.setattr(queue, "claim_timeout", 1.0)
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model=TINY_GREEDY, messages=HELLO, max_tokens=5)
        assert raised.value.body["code"] == "not_claimed" and raised.value.response.headers["retry-after"]
        request_id = raised.value.response.headers["x-request-id"]
        reader = StreamReader(client, model=TINY_GREEDY, messages=HELLO, max_tokens=5)
        reader.run()
        assert isinstance(reader.error, openai.APIError) and reader.error.body["code"] == "not_claimed"
        records = [wait_for_usage(request_id), wait_for_usage(reader.request_id)]
        assert [(r.status, r.completion_tokens, r.cost_micro) for r in records] == [("failed", 0, 0)] * 2
        assert rds.xlen(protocol.requests_key(TINY_GREEDY)) == 0  # withdrawn: no worker will run them later
        assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).exists()
        assert_settled_exactly(alice, records)
    finally:
        rds.delete(protocol.requests_key(TINY_GREEDY), protocol.workers_key(TINY_GREEDY),
                   protocol.heartbeat_key(TINY_GREEDY, "fake-worker"))


@pytest.mark.money
def test_a_client_that_disconnects_cancels_the_generation_on_the_worker(base_url, alice, alice_secret, workers,
                                                                         worker_pool, rds):
    max_tokens = 1500
    body = {"model": TINY, "messages": LONG, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    request_id = stream_then_disconnect(base_url, alice_secret, body)
    record = wait_for_usage(request_id)
    assert record.status == "cancelled" and record.finish_reason == "cancelled"
    assert 3 <= record.completion_tokens < max_tokens
    assert claimed_by(rds, request_id) in {worker_pool.worker_id(proc) for proc in workers}
    final = worker_events(rds, request_id)[-1]  # what the worker itself reported
    assert final.finished and final.finish_reason == "cancelled"
    assert final.completion_tokens == record.completion_tokens
    assert_settled_exactly(alice, [record])


@pytest.mark.money
def test_a_killed_worker_fails_only_its_own_requests_and_they_pay_only_for_generated_tokens(
        client, alice, workers, worker_pool, rds):
    readers = [StreamReader(client, model=TINY, messages=LONG, max_tokens=1500, temperature=0) for _ in range(4)]
    for r in readers:
        r.start()
    for r in readers:
        assert r.started_event.wait(30) and r.request_id, r.error
    owners = {r.request_id: claimed_by(rds, r.request_id) for r in readers}
    # The victim: the worker of the first stream that is well under way.
    busy = wait_until(lambda: next((r for r in readers if r.contents >= 5), None), timeout=30, interval=0.01,
                      message="a stream under way")
    victim_id = owners[busy.request_id]
    victim = worker_pool.proc_of(victim_id)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    worker_pool.start()  # the replacement loads while the test goes on
    for r in readers:
        r.join(timeout=60)
        assert not r.is_alive()

    lost = [r for r in readers if owners[r.request_id] == victim_id]
    kept = [r for r in readers if owners[r.request_id] != victim_id]
    assert busy in lost and kept, owners
    for r in lost:  # a clean error in the stream, after whatever it had already received
        assert isinstance(r.error, openai.APIError) and r.error.body["code"] == "worker_lost", r.error
        assert r.finish_reason is None
    for r in kept:
        assert r.error is None and r.finish_reason in ("stop", "length")

    records = {r.request_id: wait_for_usage(r.request_id) for r in readers}
    for r in lost:
        record = records[r.request_id]
        generated = max((e.completion_tokens for e in worker_events(rds, r.request_id)), default=0)
        assert record.status == "failed" and record.finish_reason == "error"
        assert record.completion_tokens == generated  # what the worker reported before it died
        assert record.cost_micro == generated * 2  # the prompt of a failed request is not billed
    assert records[busy.request_id].completion_tokens >= 5
    for r in kept:
        assert records[r.request_id].status == "completed"
        assert records[r.request_id].completion_tokens == r.usage.completion_tokens
    assert_settled_exactly(alice, list(records.values()))
    assert not rds.exists(protocol.heartbeat_key(TINY, victim_id))


@pytest.mark.money
def test_sigterm_drains_the_worker_its_stream_finishes_and_it_exits_0(client, alice, workers, worker_pool, rds):
    reader = StreamReader(client, model=TINY, messages=LONG, max_tokens=700, temperature=0)
    reader.start()
    assert reader.started_event.wait(30) and reader.request_id, reader.error
    worker_id = claimed_by(rds, reader.request_id)
    proc = worker_pool.proc_of(worker_id)
    (other,) = [p for p in workers if p is not proc]
    wait_until(lambda: reader.contents >= 3, timeout=30, interval=0.01, message="the stream to be under way")
    proc.send_signal(signal.SIGTERM)

    # Draining: out of the accepting set at once, so new requests go to the other worker.
    wait_until(lambda: not rds.zscore(protocol.workers_key(TINY), worker_id), timeout=5,
               message="the worker to stop accepting")
    meanwhile = client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=3)
    assert claimed_by(rds, meanwhile.id) == worker_pool.worker_id(other)

    reader.join(timeout=60)
    assert reader.error is None and reader.finish_reason in ("stop", "length")
    assert proc.wait(timeout=30) == 0, worker_pool.log_of(proc)
    assert reader.contents > 3 and not rds.exists(protocol.heartbeat_key(TINY, worker_id))
    records = [wait_for_usage(reader.request_id), wait_for_usage(meanwhile.id)]
    assert records[0].status == "completed" and records[0].completion_tokens == reader.usage.completion_tokens
    assert_settled_exactly(alice, records)


@pytest.mark.money
def test_structured_output_and_forced_tool_calls_are_enforced_on_the_workers(client, alice, workers, worker_pool,
                                                                           rds):
    """The grammar crosses the queue with the request and is compiled and enforced by the worker."""
    import jsonschema

    ids = {worker_pool.worker_id(proc) for proc in workers}
    schema = {"type": "object", "properties": {"mood": {"type": "string", "enum": ["calm", "rough"]},
                                               "waves": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["mood", "waves"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "sea", "schema": schema}}
    for seed in range(4):
        completion = client.chat.completions.create(model=TINY, messages=LONG, response_format=fmt, temperature=1.0,
                                                    seed=seed, max_tokens=100)
        assert claimed_by(rds, completion.id) in ids
        jsonschema.validate(json.loads(completion.choices[0].message.content), schema)
    tool = {"type": "function", "function": {"name": "log_wave", "parameters": schema}}
    called = client.chat.completions.create(model=TINY, messages=LONG, tools=[tool], temperature=1.0, seed=9,
                                            max_tokens=150, tool_choice="required")
    call = called.choices[0].message.tool_calls[0]
    assert called.choices[0].finish_reason == "tool_calls" and call.function.name == "log_wave"
    jsonschema.validate(json.loads(call.function.arguments), schema)
    records = [wait_for_usage(completion.id), wait_for_usage(called.id)]
    assert all(r.status == "completed" for r in records)
