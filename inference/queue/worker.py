"""The inference worker: one process serves one model on one device, fed through Redis Streams.

Django-free; everything it needs comes in as arguments (see `manage.py inference_worker`).

Threads:
  main        reads requests (XREADGROUP, one at a time, only while fewer than max_running are in
              flight), claims them (an atomic script: ACK + XDEL + claim key + "claimed" event) and
              submits them to the engine.
  prepare     PREPARE_THREADS threads take over a request with a grammar constraint after its claim: its
              compile (Engine.prepare, in the engine's grammar process, up to its timeout on a cache miss)
              never holds up the reading of the requests behind it; then they submit it.
  publisher   XADDs every TokenEvent the engine reports to the request's event stream, in order, in
              batches. Entry ids are explicit (0-1 is "claimed", 0-2... the events), so a batch retried
              after a connection error never duplicates an event. (inference.queue.publisher)
  heartbeat   every HEARTBEAT_INTERVAL_S: SET the worker's key with a HEARTBEAT_TTL_MS TTL, ZADD it to
              the model's set of accepting workers (ZREM once draining), re-check the cancel keys of
              the requests in flight, cancel those whose API process let its lease lapse (it died: the
              request would run on for nobody; judged only once Redis has kept the heartbeat for a
              LEASE_TTL_S), and now and then drop consumers of dead workers from the group.
              (inference.queue.liveness)
  canceller   listens on the model's cancel channel and cancels requests it runs.
              (inference.queue.liveness)

SIGTERM/SIGINT: drain. Stop taking requests, leave the accepting set, finish what runs (final events
included), remove the heartbeat and exit 0. A second signal cancels what still runs (each request
still gets its final event); a third gives up at once (exit 1).
"""
from __future__ import annotations

import logging
import os
import queue
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis

from inference.engine.types import FINISH_CANCELLED, FINISH_ERROR, TokenEvent
from inference.queue import protocol as p
from inference.queue.liveness import (  # noqa: F401 (the constants are re-exported)
    CONSUMER_DEAD_IDLE_MS,
    CONSUMER_PRUNE_EVERY_S,
    LivenessMixin,
)
from inference.queue.publisher import PUBLISH_BATCH, PublisherMixin  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

PREPARE_THREADS = 2  # requests whose grammar is being compiled at once (the compiles queue in the grammar process)
STALE_GRACE_MS = 5000  # an entry older than its claim timeout plus this was given up by its API process


def load_engine(model_path: str, device: str, kv_cache_bytes: int | None = 1 << 30, *, max_num_seqs: int = 64,
                enable_prefix_caching: bool = True, grammar_compile_timeout_s: float | None = None,
                max_model_len: int | None = None, wide_steps: str = "auto", **engine_options):
    """engine_options: dtype, quantization, attention_backend, enforce_eager, gpu_memory_utilization,
    compile_in_background (True unless given: see Engine). kv_cache_bytes None: the GPU's free memory sizes the cache (the CPU's default is 1 GiB).
    grammar_compile_timeout_s, max_model_len (None: the model's context window), wide_steps: see EngineConfig."""
    from inference.engine.config import EngineConfig
    from inference.engine.engine import Engine  # torch is imported only here

    config = EngineConfig(kv_cache_bytes=kv_cache_bytes, max_num_seqs=max_num_seqs,
                          enable_prefix_caching=enable_prefix_caching, max_model_len=max_model_len,
                          grammar_compile_timeout_s=grammar_compile_timeout_s, wide_steps=wide_steps)
    return Engine(model_path, device=device, config=config, **{"compile_in_background": True, **engine_options})


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker(LivenessMixin, PublisherMixin):
    def __init__(
        self,
        *,
        redis_url: str,
        model_id: str,
        model_path: str,
        device: str = "cpu",
        max_running: int = 8,
        worker_id: str | None = None,
        engine_factory: Callable[[str, str], object] = load_engine,
        heartbeat_ttl_ms: int = p.HEARTBEAT_TTL_MS,
        heartbeat_interval: float = p.HEARTBEAT_INTERVAL_S,
        read_block_ms: int = 200,
        metrics_port: int | None = None,
        metrics_addr: str = "127.0.0.1",
        warm_up: bool = True,
        stall_timeout_s: float = 120.0,
    ):
        if max_running < 1:
            raise ValueError("max_running must be >= 1")
        self.redis_url = redis_url
        self.model_id = model_id
        self.model_path = str(model_path)
        self.device = device
        self.max_running = max_running
        self.worker_id = worker_id or new_worker_id()
        self.engine_factory = engine_factory
        self.heartbeat_ttl_ms = heartbeat_ttl_ms
        self.heartbeat_interval = heartbeat_interval
        self.read_block_ms = read_block_ms
        self.metrics_port, self.metrics_addr = metrics_port, metrics_addr
        self.warm_up = warm_up  # run the engine's warm-up requests before the first heartbeat
        self.stall_timeout_s = stall_timeout_s  # a step running longer: the engine hangs, the worker exits (0: never)
        self.ready = False  # loaded and warmed up: the first heartbeat follows (the metrics' inference_worker_ready)

        self._requests_key = p.requests_key(model_id)
        self._workers_key = p.workers_key(model_id)
        self._heartbeat_key = p.heartbeat_key(model_id, self.worker_id)

        self._cond = threading.Condition()
        self._inflight: dict[str, int] = {}  # request id -> prompt tokens, from claim to published final event
        self._submitted: set[str] = set()  # those of them the engine has (a cancel before that would be lost)
        self._leased: set[str] = set()  # those of them whose API process renews a lease (p.lease_key)
        self._outbox: queue.Queue[TokenEvent] = queue.Queue()
        self._seq: dict[str, int] = {}  # publisher thread only: next event entry id per request
        self._signals = 0  # written only by the signal handler
        self._draining = threading.Event()  # never waited on by the main thread (signal-handler safety)
        self._reading = True  # False once the main thread has stopped reading requests for good
        self._stop_heartbeat = threading.Event()
        self._stop_canceller = threading.Event()
        self._stop_publisher = threading.Event()
        self._clock_offset_ms = 0.0  # Redis server time minus local time
        self._leases_judged_from = 0.0  # time.monotonic() from which a missing lease means its API process died
        self._last_beat = float("-inf")  # time.monotonic() of the last heartbeat Redis took
        self._cancels_sent: set[str] = set()
        self._started = time.time()
        self._redis: redis.Redis | None = None
        self._engine = None
        self._preparing = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="queue-prepare")

    # -- entry point --------------------------------------------------------

    def run(self) -> int:
        """Serve until told to stop; the process exit status."""
        self._install_signals()
        self._redis = redis.Redis.from_url(
            self.redis_url, decode_responses=True, protocol=2, socket_connect_timeout=5,
            socket_timeout=max(5.0, self.read_block_ms / 1000 * 5), health_check_interval=30,
        )
        try:
            self._ensure_group()
        except redis.RedisError as exc:
            log.error("cannot reach the inference queue at %s: %s", _safe_url(self.redis_url), exc)
            return 1
        self._claim_script = self._redis.register_script(p.CLAIM_SCRIPT)
        if self.metrics_port is not None:  # from the start: inference_worker_ready says 0 while the model loads
            from inference.queue.metrics import serve_metrics

            try:
                serve_metrics(self, self.metrics_port, self.metrics_addr)
            except OSError as exc:
                log.error("cannot serve metrics on %s:%d: %s", self.metrics_addr, self.metrics_port, exc)
                return 1
        log.info("worker %s loading %s from %s on %s", self.worker_id, self.model_id, self.model_path, self.device)
        started = time.monotonic()
        try:
            self._engine = self.engine_factory(self.model_path, self.device)
            self._engine.start()
            if self.warm_up:  # what the first steps would compile or load lazily, before any request waits for it
                self._engine.warm_up()
        except Exception:
            log.exception("could not load %s", self.model_id)
            if self._engine is not None:  # it loaded, but its warm-up failed
                try:
                    self._engine.shutdown(5.0)
                except Exception:
                    log.exception("stopping the engine failed")
            return 1
        log.info("worker %s loaded %s in %.1f s%s", self.worker_id, self.model_id, time.monotonic() - started,
                 " (warm-up requests included)" if self.warm_up else "")

        threads = [
            threading.Thread(target=self._publisher_loop, name="queue-publisher", daemon=True),
            threading.Thread(target=self._canceller_loop, name="queue-canceller", daemon=True),
        ]
        for t in threads:
            t.start()
        self.ready = True
        try:
            self._beat()  # visible to the API only now that the engine is loaded and warmed up
        except redis.RedisError as exc:
            log.warning("first heartbeat failed: %s", exc)
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="queue-heartbeat", daemon=True)
        heartbeat.start()
        log.info("worker %s serving %s (max %d running)", self.worker_id, self.model_id, self.max_running)

        self._read_loop()
        self._reading = False
        return self._drain(heartbeat, threads)

    # -- signals --------------------------------------------------------------

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        # Only flags here: the main thread may be inside a lock the handler would need.
        self._signals += 1
        self._draining.set()

    def request_stop(self) -> None:
        """Start draining (what SIGTERM does); for embedding and tests."""
        self._signals += 1
        self._draining.set()

    # -- main thread: taking requests -----------------------------------------

    def _ensure_group(self) -> None:
        try:
            # From 0: requests enqueued while no worker had created the group are served too
            # (stale ones are dropped by age).
            self._redis.xgroup_create(self._requests_key, p.GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read_loop(self) -> None:
        failing_since = None
        while not self._draining.is_set():
            with self._cond:
                while len(self._inflight) >= self.max_running and not self._draining.is_set():
                    self._cond.wait(0.2)
            if self._draining.is_set():
                break
            try:
                # One at a time: the next request goes to whichever worker has been waiting longest.
                reply = self._redis.xreadgroup(p.GROUP, self.worker_id, {self._requests_key: ">"}, count=1,
                                               block=self.read_block_ms)
                failing_since = None
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost its data (restart without persistence)
                    log.warning("consumer group missing; creating it again")
                    self._safely(self._ensure_group)
                else:
                    log.error("reading requests failed: %s", exc)
                    time.sleep(0.5)
                continue
            except redis.RedisError as exc:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("inference queue unreachable: %s", exc)
                time.sleep(0.5)
                continue
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    self._take(entry_id, fields or {})

    def _take(self, entry_id: str, fields: dict) -> None:
        raw = fields.get("request", "")
        request_id = p.request_id_of(raw)
        if request_id is None:
            log.error("dropping malformed request entry %s", entry_id)
            self._safely(self._drop_entry, entry_id)
            return
        try:
            timeout_ms = int(fields.get("claim_timeout_ms") or 0)
        except ValueError:
            timeout_ms = 0
        age_ms = self._redis_now_ms() - int(entry_id.split("-")[0])
        if timeout_ms and age_ms > timeout_ms + STALE_GRACE_MS:
            log.warning("dropping %s: queued %.1fs ago, nobody waits for it any more", request_id, age_ms / 1000)
            self._safely(self._drop_entry, entry_id)
            return
        while True:
            try:
                won = self._claim_script(
                    keys=[p.claim_key(request_id), p.events_key(request_id), self._requests_key],
                    args=[self.worker_id, p.GROUP, entry_id, p.CLAIM_TTL_S, p.EVENTS_TTL_S],
                )
                break
            except redis.RedisError as exc:
                # It may have run: we must find out (the script is safe to run again), or the API could
                # wait for a request that we own and never run.
                if self._signals >= 3:
                    return
                log.warning("claiming %s failed (%s); retrying", request_id, exc)
                time.sleep(0.5)
        if not won:
            log.info("%s was given up by the API before it could be claimed", request_id)
            return
        with self._cond:
            self._inflight[request_id] = 0
            if fields.get("lease") == "1":
                self._leased.add(request_id)
        self._seq_init(request_id)
        try:
            request = p.decode_request(raw)
        except Exception as exc:
            log.error("request %s cannot be decoded: %s", request_id, exc)
            self._outbox.put(TokenEvent(request_id, finished=True, finish_reason=FINISH_ERROR,
                                        error=f"invalid request: {exc}", error_code="invalid_request"))
            return
        prompt_tokens = request.num_prompt_tokens
        with self._cond:
            self._inflight[request_id] = prompt_tokens
        if request.constraint is not None and hasattr(self._engine, "prepare"):
            self._preparing.submit(self._start_safely, request, prompt_tokens)  # its compile holds up no other
        else:
            self._start(request, prompt_tokens)

    def _start_safely(self, request, prompt_tokens: int) -> None:
        try:
            self._start(request, prompt_tokens)
        except Exception as exc:  # in a pool thread, where nothing else would see it: the request must still end
            log.exception("starting %s failed", request.request_id)
            self._outbox.put(TokenEvent(request.request_id, finished=True, finish_reason=FINISH_ERROR,
                                        error=f"{type(exc).__name__}: {exc}", prompt_tokens=prompt_tokens))

    def _start(self, request, prompt_tokens: int) -> None:
        """Compile the request's constraint if any, then submit it, unless it was cancelled meanwhile."""
        request_id = request.request_id
        self._prepare(request)
        if self._signals >= 2 or self._cancel_requested(request_id):
            self._outbox.put(TokenEvent(request_id, finished=True, finish_reason=FINISH_CANCELLED,
                                        prompt_tokens=prompt_tokens))
            return
        if self._lease_lapsed(request_id):
            # Its API process died while it waited: nobody would read it. Nothing ran, nothing is charged.
            log.warning("not running %s: the lease of its API process lapsed before it started", request_id)
            self._outbox.put(TokenEvent(request_id, finished=True, finish_reason=FINISH_ERROR,
                                        error="the API process following the request is gone",
                                        error_code=p.ERROR_LEASE_LAPSED, prompt_tokens=prompt_tokens))
            return
        log.debug("running %s (%d prompt tokens)", request_id, prompt_tokens)
        try:
            self._engine.submit(request, self._outbox.put)
        except Exception as exc:
            log.exception("the engine refused %s", request_id)
            self._outbox.put(TokenEvent(request_id, finished=True, finish_reason=FINISH_ERROR,
                                        error=f"{type(exc).__name__}: {exc}", prompt_tokens=prompt_tokens))
            return
        with self._cond:
            if request_id in self._inflight:  # not already over
                self._submitted.add(request_id)

    def _prepare(self, request) -> None:
        """Compile the request's constraint, off the engine loop (a failure ends it in submit)."""
        if request.constraint is None or not hasattr(self._engine, "prepare"):
            return
        try:
            self._engine.prepare(request)
        except Exception:
            log.exception("preparing %s failed", request.request_id)

    def _drop_entry(self, entry_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.xack(self._requests_key, p.GROUP, entry_id)
        pipe.xdel(self._requests_key, entry_id)
        pipe.execute()

    def _cancel_requested(self, request_id: str) -> bool:
        try:
            return bool(self._redis.exists(p.cancel_key(request_id)))
        except redis.RedisError:
            return False

    def _lease_lapsed(self, request_id: str) -> bool:
        with self._cond:
            if request_id not in self._leased:
                return False
        try:
            return not self._redis.exists(p.lease_key(request_id))
        except redis.RedisError:
            return False  # unknown: the heartbeat looks again

    # -- draining -------------------------------------------------------------

    def _drain(self, heartbeat: threading.Thread, threads: list[threading.Thread]) -> int:
        with self._cond:
            running = len(self._inflight)
        log.info("worker %s draining: %d request(s) still running", self.worker_id, running)
        self._safely(lambda: self._redis.zrem(self._workers_key, self.worker_id))
        cancelled_all = False
        while True:
            with self._cond:
                if not self._inflight:
                    break
                self._cond.wait(0.2)
                left = list(self._inflight)
            if self._signals >= 3:
                log.error("worker %s stopping now; %d request(s) abandoned", self.worker_id, len(left))
                return 1
            if self._signals >= 2 and not cancelled_all:
                log.warning("second signal: cancelling %d running request(s)", len(left))
                for request_id in left:
                    self._engine.cancel(request_id)
                cancelled_all = True
        self._stop_heartbeat.set()
        heartbeat.join(timeout=5)
        self._stop_canceller.set()
        self._stop_publisher.set()
        for t in threads:
            t.join(timeout=5)

        def leave():
            pipe = self._redis.pipeline(transaction=False)
            pipe.delete(self._heartbeat_key)
            pipe.zrem(self._workers_key, self.worker_id)
            pipe.xgroup_delconsumer(self._requests_key, p.GROUP, self.worker_id)
            pipe.execute()

        self._safely(leave)
        self._preparing.shutdown(wait=False)  # idle: every request it took has ended
        try:
            self._engine.shutdown()
        except Exception:
            log.exception("engine shutdown failed")
        log.info("worker %s stopped", self.worker_id)
        return 0

    # -- helpers ----------------------------------------------------------------

    def _safely(self, fn) -> None:
        try:
            fn()
        except redis.RedisError as exc:
            log.warning("%s failed: %s", getattr(fn, "__name__", "redis call"), exc)


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def run_worker(**kwargs) -> int:
    return Worker(**kwargs).run()
