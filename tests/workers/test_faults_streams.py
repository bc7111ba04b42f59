"""Exact money when a web process or a worker dies in the middle of a stream, with real processes.

A web replica is a real `uvicorn config.asgi:application` subprocess on the test database; the workers are real
inference workers (tests/workers/paced_worker.py: the tiny test model paced to TOKENS_PER_S, like a real model on a
CPU, so a stream lasts long enough to kill something in its middle) on a real redis-server. Each test looks at
what the client received (raw SSE) and at the ledger: the balance equals the ledger's sum, no hold is left once
the sweeper has run, and the request is charged its prompt and generated tokens at the model's price (a failed
request only its generated tokens, as documented).
"""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import redis
from django.db import connection

from billing.models import Hold, UsageRecord
from billing.selectors import ledger_sum_micro
from billing.tasks.holds import sweep_holds
from inference.engine.types import GenerationRequest, SamplingParams
from inference.queue import protocol
from inference.queue.liveness import EXIT_STALLED
from tests.plugins.live_server import TINY_PRICE, tiny_cost
from tests.poll import wait_until
from tests.workers.conftest import ROOT, WorkerPool

PACED = "tiny-paced"  # served only by this module's paced workers
TOKENS_PER_S = 25
CREDIT = 1_000_000
LONG = [{"role": "user", "content": "Tell me a long story about the sea and the ships."}]
WEB_START_TIMEOUT = 60
HANG_SEED, HANG_AFTER = 4242, 12  # a request with this seed hangs its paced worker's engine after so many tokens
STALL_TIMEOUT = 4.0  # the paced workers' --stall-timeout (their steps take 1/TOKENS_PER_S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_ms(rds) -> float:
    seconds, micros = rds.time()
    return seconds * 1000 + micros / 1000


def _database_url() -> str:
    """The test database, for a process of its own."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    if connection.vendor == "postgresql":
        host, port = s["HOST"] or "127.0.0.1", s["PORT"] or 5432
        return f"postgresql://{s['USER']}:{s['PASSWORD'] or ''}@{host}:{port}/{s['NAME']}"
    pytest.skip(f"no web replica on {connection.vendor}")


# -- the processes ------------------------------------------------------------------------------


class PacedPool(WorkerPool):
    """Paced worker processes for PACED, one request at a time each (two requests: two workers)."""

    def __init__(self, redis_url, models_file, folder, model_path):
        super().__init__(redis_url, models_file, folder, model=PACED)
        self.model_path = model_path

    def start(self, *extra: str) -> subprocess.Popen:
        self._count += 1
        path = self.folder / f"paced-worker-{self._count}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.workers.paced_worker", "--redis-url", self.env["REDIS_URL"],
                 "--model", PACED, "--model-path", self.model_path, "--tokens-per-s", str(TOKENS_PER_S),
                 "--hang-seed", str(HANG_SEED), "--hang-after", str(HANG_AFTER),
                 "--stall-timeout", str(STALL_TIMEOUT), *extra],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = path
        self.procs.append(proc)
        return proc

    def stop_all(self):
        try:
            super().stop_all()
        finally:
            for proc in self.procs:  # drained or not, nothing of theirs outlives the module
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def paced_models_file(tiny_model_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("paced") / "models.json"
    path.write_text(json.dumps({PACED: {"path": tiny_model_path, **TINY_PRICE}}))
    return str(path)


@pytest.fixture(scope="module")
def paced_pool(redis_url, paced_models_file, tiny_model_path, tmp_path_factory):
    pool = PacedPool(redis_url, paced_models_file, tmp_path_factory.mktemp("paced-workers"), tiny_model_path)
    try:
        for _ in range(2):
            pool.start()  # they load while the first web replica starts
        yield pool
    finally:
        pool.stop_all()
        r = redis.Redis.from_url(redis_url)
        keys = [protocol.workers_key(PACED), protocol.requests_key(PACED)]
        keys += list(r.scan_iter(match=protocol.heartbeat_key(PACED, "*")))
        r.delete(*keys)
        r.close()


@pytest.fixture
def workers(paced_pool):
    """Two paced workers beating (one an earlier test killed is replaced)."""
    return paced_pool.ensure(2)


class WebReplica:
    def __init__(self, proc: subprocess.Popen, url: str, log_path):
        self.proc, self.url, self.log_path = proc, url, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@pytest.fixture
def web_replica(redis_url, paced_models_file, tmp_path, transactional_db):
    """start() -> a WebReplica: uvicorn serving config.asgi on the test database, with REDIS_URL set (the worker
    queue, the cache its requests' heartbeats go to). Every replica is stopped at the end, killed if need be."""
    replicas: list[WebReplica] = []
    env = {**os.environ, "DATABASE_URL": _database_url(), "REDIS_URL": redis_url, "INFERENCE_QUEUE_URL": redis_url,
           "SECRET_KEY": "test-only-web-replica", "MODELS_FILE": paced_models_file, "DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1", "PERIODIC_IN_PROCESS": "0", "SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0",
           "CSRF_COOKIE_SECURE": "0", "SECURE_HSTS_SECONDS": "0", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def start() -> WebReplica:
        port = _free_port()
        log_path = tmp_path / f"web-{len(replicas) + 1}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port",
                 str(port), "--lifespan", "off", "--no-access-log", "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        replica = WebReplica(proc, f"http://127.0.0.1:{port}", log_path)
        replicas.append(replica)

        def up():
            if proc.poll() is not None:
                raise AssertionError(f"the web replica exited with {proc.returncode}:\n{replica.log()}")
            try:
                return httpx.get(f"{replica.url}/livez", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=WEB_START_TIMEOUT, interval=0.2, message="the web replica to answer /livez")
        return replica

    try:
        yield start
    finally:
        for replica in replicas:
            if replica.proc.poll() is None:
                replica.proc.terminate()
                try:
                    replica.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(replica.proc.pid, signal.SIGKILL)
                    replica.proc.wait(timeout=10)


@pytest.fixture
def scaled_out(settings, redis_url):
    """This process (where the tests call the sweeper) configured like every host of a scaled-out deployment:
    its cache is the replicas' Redis (the sweeper sees the heartbeats their requests write) and so is its
    worker queue (the sweeper reads the workers' final counts)."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}
    settings.INFERENCE_QUEUE_URL = redis_url


@pytest.fixture
def rds(redis_url):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    r.close()


@pytest.fixture
def org_key(transactional_db):
    from tests.factories import make_key, make_org

    org = make_org("alice", credit_micro=CREDIT)
    return org, make_key(org)[1]


# -- the client -----------------------------------------------------------------------------------


class SSEReader(threading.Thread):
    """One raw SSE stream read in the background: every `data:` event as the client received it."""

    def __init__(self, url: str, secret: str, body: dict, *, pause_after: int | None = None, pause_s: float = 0):
        super().__init__(daemon=True)
        self.url, self.secret, self.body = url, secret, body
        self.pause_after, self.pause_s = pause_after, pause_s
        self.status = None
        self.request_id = None
        self.events: list = []  # decoded JSON objects, and "[DONE]"
        self.broken: Exception | None = None  # the connection failed before the stream ended
        self.started_event = threading.Event()

    def run(self):
        try:
            with httpx.Client(timeout=60) as http:
                with http.stream("POST", f"{self.url}/v1/chat/completions", json=self.body,
                                 headers={"Authorization": f"Bearer {self.secret}"}) as response:
                    self.status = response.status_code
                    self.request_id = response.headers.get("x-request-id")
                    self.started_event.set()
                    for line in response.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        data = line[len("data: "):]
                        self.events.append("[DONE]" if data == "[DONE]" else json.loads(data))
                        if self.pause_after is not None and self.contents == self.pause_after:
                            time.sleep(self.pause_s)  # a client that stops reading for a while
        except httpx.TransportError as exc:
            self.broken = exc
        finally:
            self.started_event.set()

    @property
    def contents(self) -> int:
        return sum(1 for e in self.events if isinstance(e, dict) and e.get("choices")
                   and e["choices"][0]["delta"].get("content"))

    @property
    def errors(self) -> list[dict]:
        return [e["error"] for e in self.events if isinstance(e, dict) and "error" in e]

    @property
    def usage_chunks(self) -> list[dict]:
        return [e for e in self.events if isinstance(e, dict) and e.get("choices") == [] and e.get("usage")]

    @property
    def text(self) -> str:
        return "".join(e["choices"][0]["delta"].get("content") or "" for e in self.events
                       if isinstance(e, dict) and e.get("choices"))

    @property
    def finish_reason(self) -> str | None:
        reasons = [e["choices"][0]["finish_reason"] for e in self.events if isinstance(e, dict) and e.get("choices")]
        return next((r for r in reversed(reasons) if r), None)


def stream_body(max_tokens: int) -> dict:
    return {"model": PACED, "messages": LONG, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}


# -- what the ledger says -------------------------------------------------------------------------


def assert_ledger_exact(org, records):
    """No hold left, the balance is the ledger's sum, and it moved by exactly the records' costs, each the
    model's price of its tokens (a failed request's prompt is not charged)."""
    assert not Hold.objects.filter(status=Hold.Status.ACTIVE).exists()
    account = org.credit_account
    account.refresh_from_db()
    assert ledger_sum_micro(account=account) == account.balance_micro
    assert account.held_micro == 0
    assert CREDIT - account.balance_micro == sum(r.cost_micro for r in records)
    for r in records:
        if r.status == UsageRecord.Status.FAILED:
            assert r.cost_micro == tiny_cost(0, r.completion_tokens), r
        else:
            assert r.cost_micro == tiny_cost(r.prompt_tokens, r.completion_tokens, r.cached_tokens), r


def worker_events(rds, request_id: str):
    return [protocol.decode_event(f["event"]) for _, f in rds.xrange(protocol.events_key(request_id))
            if f.get("kind") == protocol.KIND_EVENT]


def report(scenario: str, **figures) -> None:
    """The figures of a scenario, printed (pytest -rP shows them)."""
    print(f"[{scenario}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# -- the lease and the final counts, against Redis, with a fake worker ----------------------------------


async def test_the_follower_renews_the_lease_apart_from_its_reader_and_drops_the_final_counts_it_read(
        redis_url, rds):
    from types import SimpleNamespace

    from inference.engine.types import TokenEvent
    from inference.queue.backend import RedisBackend

    model, worker = "lease-test-model", "fake-worker"
    rds.set(protocol.heartbeat_key(model, worker), json.dumps({"worker": worker, "pid": 0}), px=60_000)
    rds.zadd(protocol.workers_key(model), {worker: int(time.time() * 1000)})
    backend = RedisBackend(redis_url, block_ms=100, lease_ttl_s=0.6, lease_renew_s=0.2)
    request = GenerationRequest("lease-1", [1, 2, 3], SamplingParams(max_tokens=5))
    try:
        await backend.enqueue(SimpleNamespace(id=model), request)
        (entry_id, fields), = rds.xrange(protocol.requests_key(model))
        assert fields["lease"] == "1" and 0 < rds.pttl(protocol.lease_key("lease-1")) <= 600
        followed = backend.generate(SimpleNamespace(id=model), request)
        first = asyncio.ensure_future(followed.__anext__())  # then nobody reads for 3 leases
        rds.xadd(protocol.events_key("lease-1"), {"kind": "claimed", "worker": worker}, id="0-1")
        rds.xadd(protocol.events_key("lease-1"), {"kind": "event", "event": protocol.encode_event(
            TokenEvent("lease-1", text="hi", token_ids=(7,), completion_tokens=1))}, id="0-2")
        assert (await first).text == "hi"
        for _ in range(9):
            await asyncio.sleep(0.2)
            assert rds.exists(protocol.lease_key("lease-1")), "the lease lapsed while its request was followed"
        final = TokenEvent("lease-1", finished=True, finish_reason="length", prompt_tokens=3, completion_tokens=5)
        rds.xadd(protocol.events_key("lease-1"), {"kind": "event", "event": protocol.encode_event(final)}, id="0-3")
        rds.set(protocol.final_key("lease-1"), protocol.encode_final(final, _redis_ms(rds)))
        assert backend.final_counts(["lease-1", "nobody"]) == {"lease-1": {
            "prompt_tokens": 3, "completion_tokens": 5, "cached_tokens": 0, "finish_reason": "length",
            "finished_at_ms": int(protocol.decode_final(rds.get(protocol.final_key("lease-1")))["at_ms"])}}
        assert (await followed.__anext__()).finished
        # Read: this process settles it, so neither the lease nor the worker's counts are left for anyone (a
        # renewal already on its way when the lease was deleted may write it back: unrenewed, it lapses).
        assert not rds.exists(protocol.final_key("lease-1"))
        wait_until(lambda: not rds.exists(protocol.lease_key("lease-1")), timeout=1.0, interval=0.05,
                   message="the released lease to be gone within its TTL")
        assert backend.final_counts(["lease-1"]) == {}
        rds.set(protocol.final_key("garbled"), '{"prompt_tokens": -1}')
        assert backend.final_counts(["garbled"]) == {}  # logged, never charged
    finally:
        rds.delete(protocol.requests_key(model), protocol.workers_key(model), protocol.heartbeat_key(model, worker),
                   protocol.events_key("lease-1"), protocol.final_key("garbled"))


# -- the faults -------------------------------------------------------------------------------------


@pytest.mark.money
def test_a_web_replica_killed_mid_stream_stops_its_worker_and_the_sweeper_charges_the_workers_count(
        web_replica, workers, paced_pool, org_key, rds, scaled_out):
    org, secret = org_key
    web = web_replica()
    reader = SSEReader(web.url, secret, stream_body(400))
    reader.start()
    assert reader.started_event.wait(60) and reader.status == 200, (reader.status, reader.broken, web.log())
    wait_until(lambda: reader.contents >= 150 or not reader.is_alive(), timeout=60, interval=0.01,
               message="150 streamed tokens")
    request_id = reader.request_id
    worker_id = rds.get(protocol.claim_key(request_id))
    assert worker_id and reader.contents >= 150

    killed_ms = _redis_ms(rds)
    killed_at = time.monotonic()
    os.kill(web.proc.pid, signal.SIGKILL)
    web.proc.wait(timeout=10)

    # The client's view: its stream is cut off; no usage, no [DONE].
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert isinstance(reader.broken, httpx.TransportError), (reader.broken, reader.events[-3:])
    assert "[DONE]" not in reader.events and not reader.usage_chunks and not reader.errors
    received = reader.contents

    # The worker stops within the lease, and says how many tokens it generated.
    raw = wait_until(lambda: rds.get(protocol.final_key(request_id)), timeout=protocol.LEASE_TTL_S + 15,
                     interval=0.02, message="the worker's final counts")
    noticed_s = time.monotonic() - killed_at
    final = protocol.decode_final(raw)
    stopped_s = (final["at_ms"] - killed_ms) / 1000
    assert final["finish_reason"] == "cancelled"
    assert received <= final["completion_tokens"] < 400
    assert stopped_s <= protocol.LEASE_TTL_S + 3, stopped_s
    events = worker_events(rds, request_id)
    assert events[-1].finished and events[-1].completion_tokens == final["completion_tokens"]
    assert "".join(e.text for e in events).startswith(reader.text)  # the client got a prefix of it
    heartbeat = lambda: json.loads(rds.get(protocol.heartbeat_key(PACED, worker_id)) or "{}")  # noqa: E731
    wait_until(lambda: heartbeat().get("running") == 0, timeout=5, message="the worker to run nothing")
    assert "let its lease lapse" in paced_pool.log_of(paced_pool.proc_of(worker_id))

    # Nobody settled it: the hold waits for the sweeper, whose next run charges the worker's count.
    hold = Hold.objects.get(request_id=request_id)
    assert hold.status == Hold.Status.ACTIVE
    assert sweep_holds() == {"settled": 1, "released": 0}
    record = UsageRecord.objects.get(request_id=request_id)
    assert (record.status, record.finish_reason) == ("cancelled", "cancelled")
    assert record.prompt_tokens == final["prompt_tokens"] == hold.prompt_tokens > 0
    assert (record.completion_tokens, record.cached_tokens) == (final["completion_tokens"], final["cached_tokens"])
    assert record.cost_micro == tiny_cost(record.prompt_tokens, record.completion_tokens, record.cached_tokens)
    assert_ledger_exact(org, [record])
    assert sweep_holds() == {"settled": 0, "released": 0}  # exactly once
    assert_ledger_exact(org, [record])
    report("web replica killed", content_chunks_to_client=received, generated_by_worker=final["completion_tokens"],
           charged_completion=record.completion_tokens, charged_prompt=record.prompt_tokens,
           cost_micro=record.cost_micro, worker_stopped_after_s=round(stopped_s, 2),
           final_seen_after_s=round(noticed_s, 2))


@pytest.mark.money
def test_a_worker_killed_mid_stream_ends_the_stream_with_its_usage_and_done_and_the_other_worker_goes_on(
        web_replica, workers, paced_pool, org_key, rds, scaled_out):
    org, secret = org_key
    web = web_replica()
    lost = SSEReader(web.url, secret, stream_body(400))
    lost.start()
    assert lost.started_event.wait(60) and lost.status == 200, (lost.status, lost.broken, web.log())
    wait_until(lambda: lost.contents >= 20, timeout=60, interval=0.01, message="the first stream under way")
    victim_id = rds.get(protocol.claim_key(lost.request_id))
    kept = SSEReader(web.url, secret, stream_body(60))
    kept.start()
    assert kept.started_event.wait(60) and kept.status == 200
    kept_by = wait_until(lambda: rds.get(protocol.claim_key(kept.request_id)), timeout=30,
                         message="the second stream to be claimed")
    assert kept_by != victim_id  # one request at a time per worker: the other one took it

    victim = paced_pool.proc_of(victim_id)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    lost.join(timeout=60)
    kept.join(timeout=60)
    assert not lost.is_alive() and not kept.is_alive()

    # The lost stream: the tokens it got, the error, the usage of what was generated, then [DONE].
    assert lost.broken is None, lost.broken
    assert lost.events[-1] == "[DONE]", lost.events[-3:]
    usage_chunk, error_event = lost.events[-2], lost.events[-3]
    assert usage_chunk["choices"] == [] and usage_chunk["id"] == lost.request_id
    assert error_event["error"]["code"] == "worker_lost", error_event
    assert lost.errors == [error_event["error"]] and lost.usage_chunks == [usage_chunk]
    assert lost.finish_reason is None
    published = worker_events(rds, lost.request_id)
    generated = max(e.completion_tokens for e in published)
    assert lost.text == "".join(e.text for e in published)  # all the worker published before it died
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == generated >= lost.contents >= 20
    assert usage["total_tokens"] == usage["prompt_tokens"] + generated
    assert usage["prompt_tokens"] == Hold.objects.get(request_id=lost.request_id).prompt_tokens

    # The other stream finished normally on the other worker.
    assert kept.broken is None and not kept.errors
    assert kept.finish_reason == "length" and kept.events[-1] == "[DONE]"
    assert kept.usage_chunks[0]["usage"]["completion_tokens"] == 60

    def records():
        found = {r.request_id: r for r in UsageRecord.objects.filter(request_id__in=[lost.request_id,
                                                                                      kept.request_id])}
        return found if len(found) == 2 else None

    found = wait_until(records, message="both requests settled")
    lost_record, kept_record = found[lost.request_id], found[kept.request_id]
    assert (lost_record.status, lost_record.finish_reason) == ("failed", "error")
    assert (lost_record.prompt_tokens, lost_record.completion_tokens) == (usage["prompt_tokens"], generated)
    assert lost_record.cost_micro == tiny_cost(0, generated)  # a failed request: its prompt is on us
    assert (kept_record.status, kept_record.completion_tokens) == ("completed", 60)
    assert sweep_holds() == {"settled": 0, "released": 0}
    assert_ledger_exact(org, [lost_record, kept_record])
    report("worker killed", content_chunks_to_client=lost.contents, generated_by_worker=generated,
           usage_chunk=usage, charged_completion=lost_record.completion_tokens,
           charged_prompt=0, cost_micro=lost_record.cost_micro,
           other_stream=f"{kept.finish_reason}, {kept_record.completion_tokens} tokens, "
                        f"{kept_record.cost_micro} micro-USD")


@pytest.mark.money
def test_a_worker_whose_engine_hangs_leaves_the_queue_and_exits_and_its_stream_ends_with_its_usage(
        web_replica, workers, paced_pool, org_key, rds, scaled_out):
    org, secret = org_key
    web = web_replica()
    hung = SSEReader(web.url, secret, {**stream_body(400), "seed": HANG_SEED})
    hung.start()
    assert hung.started_event.wait(60) and hung.status == 200, (hung.status, hung.broken, web.log())
    worker_id = wait_until(lambda: rds.get(protocol.claim_key(hung.request_id)), timeout=30,
                           message="the request to be claimed")
    victim = paced_pool.proc_of(worker_id)
    wait_until(lambda: max((e.completion_tokens for e in worker_events(rds, hung.request_id)), default=0)
               >= HANG_AFTER, timeout=60, interval=0.01, message="the tokens before the hang")
    hung_at = time.monotonic()

    assert victim.wait(timeout=STALL_TIMEOUT + 30) == EXIT_STALLED
    hung.join(timeout=30)
    assert not hung.is_alive()
    ended_after = time.monotonic() - hung_at
    log = paced_pool.log_of(victim)
    assert "the engine hangs" in log and "hang_forever" in log, log  # where the engine's thread was held
    assert worker_id not in rds.zrange(protocol.workers_key(PACED), 0, -1)

    # The stream: the tokens before the hang, the error, the usage of what was generated, then [DONE].
    assert hung.broken is None and hung.events[-1] == "[DONE]", (hung.broken, hung.events[-3:])
    usage_chunk, error_event = hung.events[-2], hung.events[-3]
    assert error_event["error"]["code"] == "worker_lost", error_event
    assert usage_chunk["usage"]["completion_tokens"] == HANG_AFTER
    assert hung.text == "".join(e.text for e in worker_events(rds, hung.request_id))  # all it published
    record = wait_until(lambda: UsageRecord.objects.filter(request_id=hung.request_id).first(),
                        message="the request settled")
    assert (record.status, record.completion_tokens) == ("failed", HANG_AFTER)
    assert record.cost_micro == tiny_cost(0, HANG_AFTER)
    assert sweep_holds() == {"settled": 0, "released": 0}
    assert_ledger_exact(org, [record])
    report("engine hangs", stall_timeout_s=STALL_TIMEOUT, stream_ended_after_s=round(ended_after, 1),
           generated=HANG_AFTER, cost_micro=record.cost_micro)


@pytest.mark.money
def test_a_client_slow_to_read_keeps_its_lease_and_gets_the_whole_answer(web_replica, workers, org_key, rds):
    org, secret = org_key
    web = web_replica()
    pause_s = protocol.LEASE_TTL_S + 2  # longer than a lease, while the worker still generates
    reader = SSEReader(web.url, secret, stream_body(250), pause_after=10, pause_s=pause_s)
    started = time.monotonic()
    reader.start()
    reader.join(timeout=120)
    assert not reader.is_alive() and reader.broken is None, reader.broken
    assert time.monotonic() - started > pause_s
    assert reader.finish_reason == "length" and not reader.errors and reader.events[-1] == "[DONE]"
    assert reader.usage_chunks[0]["usage"]["completion_tokens"] == 250
    record = wait_until(lambda: UsageRecord.objects.filter(request_id=reader.request_id).first(),
                        message="the usage record")
    assert (record.status, record.completion_tokens) == ("completed", 250)
    assert not rds.exists(protocol.final_key(reader.request_id))  # read, so left to the web process to settle
    assert_ledger_exact(org, [record])


@pytest.mark.money
def test_a_request_whose_web_process_died_before_a_worker_took_it_never_runs_and_costs_nothing(
        workers, org_key, rds, scaled_out):
    from billing.services import hold_place
    from core.money import Price

    org, _ = org_key
    request_id = "chatcmpl-orphan"
    prompt = [5, 6, 7, 8]
    hold = hold_place(organization=org, api_key=None, request_id=request_id, model_id=PACED,
                      prompt_tokens=len(prompt), max_tokens=50, price=Price(1_000_000, 2_000_000))
    # Queued with a lease that is already gone: its API process died while it waited.
    request = GenerationRequest(request_id, prompt, SamplingParams(max_tokens=50))
    rds.xadd(protocol.requests_key(PACED), {"request": protocol.encode_request(request), "claim_timeout_ms": "30000",
                                            "lease": "1"})
    final = protocol.decode_final(wait_until(lambda: rds.get(protocol.final_key(request_id)), timeout=30,
                                             message="the worker's final counts"))
    assert (final["finish_reason"], final["completion_tokens"]) == ("error", 0)
    (event,) = worker_events(rds, request_id)
    assert event.error_code == protocol.ERROR_LEASE_LAPSED
    assert sweep_holds() == {"settled": 1, "released": 0}
    record = UsageRecord.objects.get(request_id=request_id)
    assert (record.status, record.completion_tokens, record.cost_micro) == ("failed", 0, 0)
    hold.refresh_from_db()
    assert hold.status == Hold.Status.SETTLED
    assert_ledger_exact(org, [record])
