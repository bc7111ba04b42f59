"""Redis restarted without its data while requests are followed, against a real redis-server with a fake worker.

A restart without persistence loses every key at once: a request's event stream (with whatever the worker wrote
that the API process had not read yet, the final event included), its lease and the worker's heartbeat. The API
process following it must end it, charged what was delivered, instead of waiting for events nobody will write; a
worker must not cancel requests whose API processes are alive only because their leases vanished with the data.
"""
import asyncio
import json
import time
from types import SimpleNamespace

import pytest

from inference.engine.types import GenerationRequest, SamplingParams, TokenEvent
from inference.queue import backend as queue_backend
from inference.queue import protocol
from inference.queue.backend import RedisBackend
from inference.queue.worker import Worker

MODEL = "data-loss-model"
WORKER = "fake-worker"
SPEC = SimpleNamespace(id=MODEL)


@pytest.fixture
def fake_worker(rds):
    """A worker that beats (its heartbeat outlives the test) and writes nothing unless the test does."""
    rds.set(protocol.heartbeat_key(MODEL, WORKER), json.dumps({"worker": WORKER, "pid": 0}), px=60_000)
    rds.zadd(protocol.workers_key(MODEL), {WORKER: int(time.time() * 1000)})
    yield
    for key in rds.scan_iter(f"{protocol.PREFIX}:*"):
        if MODEL in key or ":request:loss-" in key:
            rds.delete(key)


def write(rds, request_id: str, entry: int, event: TokenEvent | None = None) -> None:
    """What the worker writes: its claim at 0-1, then its events from 0-2 on."""
    fields = ({"kind": "claimed", "worker": WORKER} if event is None
              else {"kind": "event", "event": protocol.encode_event(event)})
    rds.xadd(protocol.events_key(request_id), fields, id=f"0-{entry}")


def token(request_id: str, n: int) -> TokenEvent:
    return TokenEvent(request_id, text=f"t{n}", token_ids=(n,), completion_tokens=n)


async def started(rds, request_id: str, backend: RedisBackend):
    """A request claimed by the fake worker, its first token read by the follower."""
    request = GenerationRequest(request_id, [1, 2, 3], SamplingParams(max_tokens=20))
    await backend.enqueue(SPEC, request)
    followed = backend.generate(SPEC, request)
    write(rds, request_id, 1)
    write(rds, request_id, 2, token(request_id, 1))
    first = await asyncio.wait_for(followed.__anext__(), 10)
    assert (first.text, first.completion_tokens) == ("t1", 1)
    return followed


async def rest(followed) -> list[TokenEvent]:
    return [event async for event in followed]


@pytest.fixture
def backend(redis_url, monkeypatch):
    monkeypatch.setattr(queue_backend, "EVENTS_LOST_GRACE_S", 0.5)
    monkeypatch.setattr(queue_backend, "CANCEL_GRACE_S", 0.5)
    return RedisBackend(redis_url, block_ms=100)


async def test_a_request_whose_events_redis_lost_ends_charged_what_was_delivered(rds, fake_worker, backend):
    followed = await started(rds, "loss-final", backend)
    # The worker wrote its last token and its final event; Redis restarted before they were read.
    rds.delete(protocol.events_key("loss-final"))
    began = time.monotonic()
    events = await asyncio.wait_for(rest(followed), 10)
    assert [(e.finished, e.finish_reason, e.error_code, e.prompt_tokens, e.completion_tokens) for e in events] == [
        (True, "error", "worker_lost", 3, 1)]
    assert time.monotonic() - began < 5  # not held for ever by a worker that still beats
    assert rds.exists(protocol.cancel_key("loss-final"))  # in case the worker still runs it


async def test_a_stream_that_comes_back_with_a_hole_ends_at_the_hole(rds, fake_worker, backend):
    followed = await started(rds, "loss-hole", backend)
    rds.delete(protocol.events_key("loss-hole"))  # tokens 2 and 3 were written, then lost
    write(rds, "loss-hole", 5, token("loss-hole", 4))  # the worker goes on after the restart
    events = await asyncio.wait_for(rest(followed), 10)
    assert [(e.finish_reason, e.error_code, e.completion_tokens, e.text) for e in events] == [
        ("error", "worker_lost", 1, "")]
    assert rds.exists(protocol.cancel_key("loss-hole"))


async def test_a_stream_the_worker_writes_again_without_a_hole_is_answered_whole(rds, fake_worker, backend):
    followed = await started(rds, "loss-none", backend)
    rds.delete(protocol.events_key("loss-none"))  # nothing unread was lost: the worker retries its next batch
    await asyncio.sleep(0.3)
    write(rds, "loss-none", 3, token("loss-none", 2))
    write(rds, "loss-none", 4, TokenEvent("loss-none", finished=True, finish_reason="length", prompt_tokens=3,
                                          completion_tokens=2))
    events = await asyncio.wait_for(rest(followed), 10)
    assert [(e.text, e.finished, e.finish_reason, e.completion_tokens) for e in events] == [
        ("t2", False, None, 2), ("", True, "length", 2)]
    assert not rds.exists(protocol.cancel_key("loss-none"))


async def test_a_cancel_no_worker_answers_ends_the_request_here(rds, fake_worker, backend):
    followed = await started(rds, "loss-cancel", backend)
    backend.cancel(SPEC, "loss-cancel")  # its worker forgot it: no final event will come
    events = await asyncio.wait_for(rest(followed), 10)
    assert [(e.finish_reason, e.error_code, e.completion_tokens) for e in events] == [("cancelled", None, 1)]


async def test_a_request_its_worker_stopped_unasked_is_a_lost_one_not_a_cancelled_one(rds, fake_worker, backend):
    followed = await started(rds, "loss-unasked", backend)
    # The worker found the lease gone (Redis lost it) and cancelled a request this process still follows.
    write(rds, "loss-unasked", 3, TokenEvent("loss-unasked", finished=True, finish_reason="cancelled",
                                             prompt_tokens=3, completion_tokens=2))
    events = await asyncio.wait_for(rest(followed), 10)
    assert [(e.finish_reason, e.error_code, e.completion_tokens) for e in events] == [("error", "worker_lost", 2)]


class _Engine:
    def __init__(self):
        self.cancelled = []

    def cancel(self, request_id):
        self.cancelled.append(request_id)


def test_a_worker_judges_leases_only_once_redis_kept_its_heartbeat_for_a_lease(redis_url, rds, fake_worker,
                                                                              monkeypatch):
    import redis

    monkeypatch.setattr(protocol, "LEASE_TTL_S", 0.4)
    worker = Worker(redis_url=redis_url, model_id=MODEL, model_path="unused", worker_id="lease-judge")
    worker._redis = redis.Redis.from_url(redis_url, decode_responses=True)
    worker._engine = engine = _Engine()
    worker._inflight = {"loss-alive": 3, "loss-dead": 3}
    worker._submitted = {"loss-alive", "loss-dead"}
    worker._leased = {"loss-alive", "loss-dead"}

    def cancelled_by_a_beat() -> list[str]:
        engine.cancelled.clear()
        worker._cancels_sent.clear()
        worker._beat()
        return engine.cancelled

    try:
        rds.set(protocol.lease_key("loss-alive"), "1", px=60_000)
        assert cancelled_by_a_beat() == ["loss-dead"]  # its API process died: the request runs for nobody
        # Redis restarted: the heartbeat it had a moment ago is gone, and every lease with it.
        rds.delete(protocol.heartbeat_key(MODEL, "lease-judge"), protocol.lease_key("loss-alive"))
        assert cancelled_by_a_beat() == []  # the API processes get a lease's time to renew theirs
        rds.set(protocol.lease_key("loss-alive"), "1", px=60_000)
        time.sleep(0.5)
        assert cancelled_by_a_beat() == ["loss-dead"]
        # A heartbeat that lapsed because this worker beat too late says nothing of the leases.
        rds.delete(protocol.heartbeat_key(MODEL, "lease-judge"))
        worker._last_beat = time.monotonic() - 10
        assert cancelled_by_a_beat() == ["loss-dead"]
    finally:
        worker._redis.close()
