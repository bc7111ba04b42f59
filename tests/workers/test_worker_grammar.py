"""A request whose grammar takes long to compile holds up no other request of its worker: the compile runs on the
worker's prepare threads, not in the loop that reads the queue. A real Worker on a real Redis, with an engine
whose grammar compiles wait until the test lets them finish."""
import asyncio
import threading
from types import SimpleNamespace

import pytest

from inference.engine.types import (CONSTRAINT_JSON_SCHEMA, Constraint, GenerationRequest, SamplingParams,
                                    TokenEvent)
from inference.queue import protocol
from inference.queue.backend import RedisBackend
from inference.queue.worker import Worker
from tests.poll import wait_until

MODEL = "slow-grammar-model"
SPEC = SimpleNamespace(id=MODEL)
SLOW = Constraint(CONSTRAINT_JSON_SCHEMA, '{"type": "string", "maxLength": 77}')


class _SlowGrammarEngine:
    """Answers every request at once with one token; a grammar compile waits for `release`."""

    tokenizer = None

    def __init__(self):
        self.release = threading.Event()
        self.compiling: list[str] = []

    def start(self):
        pass

    def warm_up(self):
        pass

    def prepare(self, request):
        self.compiling.append(request.request_id)
        assert self.release.wait(60)

    def submit(self, request, on_event):
        on_event(TokenEvent(request.request_id, token_ids=[7], text="x", completion_tokens=1,
                            prompt_tokens=len(request.prompt_token_ids)))
        on_event(TokenEvent(request.request_id, finished=True, finish_reason="stop", completion_tokens=1,
                            prompt_tokens=len(request.prompt_token_ids)))

    def cancel(self, request_id):
        pass

    def stalled_for(self):
        return 0.0

    def shutdown(self, timeout=None):
        pass


@pytest.fixture
def worker(redis_url, rds):
    engine = _SlowGrammarEngine()
    worker = Worker(redis_url=redis_url, model_id=MODEL, model_path="unused", worker_id="slow-grammar",
                    max_running=4, engine_factory=lambda path, device: engine, warm_up=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_until(lambda: rds.exists(protocol.heartbeat_key(MODEL, "slow-grammar")), timeout=30,
               message="the worker to beat")
    yield worker, engine
    engine.release.set()
    worker.request_stop()
    thread.join(timeout=30)
    for key in rds.scan_iter(f"{protocol.PREFIX}:*"):
        if MODEL in key or ":request:grammar-" in key:
            rds.delete(key)


async def _run(backend, request) -> list[TokenEvent]:
    await backend.enqueue(SPEC, request)
    return [event async for event in backend.generate(SPEC, request)]


async def test_a_slow_grammar_compile_holds_up_no_request_behind_it(redis_url, worker):
    _, engine = worker
    backend = RedisBackend(redis_url, block_ms=100)
    constrained = GenerationRequest("grammar-slow", [1, 2, 3], SamplingParams(max_tokens=4), constraint=SLOW)
    slow = asyncio.create_task(_run(backend, constrained))
    await asyncio.to_thread(wait_until, lambda: engine.compiling == ["grammar-slow"], timeout=30,
                            message="the compile to start")

    plain = await asyncio.wait_for(_run(backend, GenerationRequest("grammar-plain", [1, 2], SamplingParams())), 20)
    assert [(e.finished, e.finish_reason) for e in plain][-1] == (True, "stop")
    assert not slow.done()  # still compiling: the plain request went past it

    engine.release.set()
    events = await asyncio.wait_for(slow, 20)
    assert events[-1].finished and events[-1].finish_reason == "stop" and events[-1].completion_tokens == 1
