"""The worker's liveness: heartbeat, pruning of dead workers' consumers, Redis clock, cancel listener.

Django-free, like the worker it is part of (`inference.queue.worker.Worker` mixes it in).

Threads:
  heartbeat   every HEARTBEAT_INTERVAL_S: first, when the engine's step under way has run past the stall timeout
              (a hung device or kernel: nothing in the process can stop it), logs where the engine's thread is,
              leaves the queue (its heartbeat deleted: the API processes end its requests as worker_lost at
              once, settled for what it published) and exits the process with EXIT_STALLED for its supervisor to
              restart it. Then SET the worker's key with a HEARTBEAT_TTL_MS TTL, ZADD it to
              the model's set of accepting workers (ZREM once draining), re-check the cancel keys of
              the requests in flight, cancel those whose API process let its lease lapse (it died: the
              request would run on for nobody), and now and then drop consumers of dead workers from
              the group. A lease is judged only once Redis has kept this worker's heartbeat for a whole
              LEASE_TTL_S: after Redis was unreachable, or lost its data (a restart without persistence
              loses every lease at once), the API processes still following their requests have that long
              to renew theirs.
  canceller   listens on the model's cancel channel and cancels requests it runs.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from inference.queue import protocol as p

log = logging.getLogger("inference.queue.worker")  # the worker's logger, as before the split

EXIT_STALLED = 3  # the process status of a worker whose engine hung
CONSUMER_PRUNE_EVERY_S = 30.0
CONSUMER_DEAD_IDLE_MS = 60_000


class LivenessMixin:
    """The heartbeat and canceller threads of a Worker, which sets up every attribute used here."""

    worker_id: str
    model_id: str
    device: str
    max_running: int
    heartbeat_ttl_ms: int
    heartbeat_interval: float
    stall_timeout_s: float
    _requests_key: str
    _workers_key: str
    _heartbeat_key: str
    _cond: threading.Condition
    _inflight: dict[str, int]
    _submitted: set[str]
    _leased: set[str]
    _draining: threading.Event
    _reading: bool
    _stop_heartbeat: threading.Event
    _stop_canceller: threading.Event
    _clock_offset_ms: float
    _leases_judged_from: float
    _last_beat: float
    _cancels_sent: set[str]
    _started: float
    _redis: redis.Redis | None
    _engine: object
    _safely: Callable[[Callable[[], object]], None]

    # -- heartbeat thread -----------------------------------------------------

    def _heartbeat_loop(self) -> None:
        next_prune = time.monotonic() + 1.0
        while not self._stop_heartbeat.wait(self.heartbeat_interval):
            self._exit_if_stalled()
            try:
                self._beat()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + CONSUMER_PRUNE_EVERY_S
                    self._prune_consumers()
            except redis.RedisError as exc:
                self._leases_judged_from = time.monotonic() + p.LEASE_TTL_S
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat failed")

    def _exit_if_stalled(self) -> None:
        stalled_for = getattr(self._engine, "stalled_for", None)  # an engine that cannot say is never stalled
        stalled = stalled_for() if stalled_for is not None else 0.0
        if not self.stall_timeout_s or stalled < self.stall_timeout_s:
            return
        with self._cond:
            running = len(self._inflight)
        log.critical("the engine's step has run for %.0f s (stall timeout %g s): the engine hangs. Worker %s leaves "
                     "the queue and exits %d; its %d running requests end as worker_lost. The engine's thread:\n%s",
                     stalled, self.stall_timeout_s, self.worker_id, EXIT_STALLED, running,
                     self._engine.thread_stack())
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.zrem(self._workers_key, self.worker_id)
            pipe.delete(self._heartbeat_key)
            pipe.execute()
        except redis.RedisError as exc:  # the heartbeat lapses within its TTL all the same
            log.warning("could not leave the queue: %s", exc)
        logging.shutdown()
        os._exit(EXIT_STALLED)  # the engine's thread cannot be stopped, nor joined: no orderly exit waits for it

    def _beat(self) -> None:
        with self._cond:
            running = list(self._inflight)
            leased = [request_id for request_id in running if request_id in self._leased]
        draining = self._draining.is_set()
        info = {
            "worker": self.worker_id, "model": self.model_id, "device": self.device, "pid": os.getpid(),
            "host": socket.gethostname(), "max_running": self.max_running, "running": len(running),
            "draining": draining, "started": self._started,
            "context_window": getattr(getattr(self._engine, "tokenizer", None), "context_window", None),
        }
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._heartbeat_key, json.dumps(info), px=self.heartbeat_ttl_ms, get=True)
        if not self._reading:
            # Out of the set only once no read can take a request any more: absent means not taking.
            pipe.zrem(self._workers_key, self.worker_id)
        elif not draining:
            pipe.zadd(self._workers_key, {self.worker_id: int(time.time() * 1000)})
        pipe.time()
        for request_id in running:
            pipe.exists(p.cancel_key(request_id))
        for request_id in leased:
            pipe.exists(p.lease_key(request_id))
        before, sent = time.time(), time.monotonic()
        results = pipe.execute()
        if results[0] is None and sent - self._last_beat < self.heartbeat_ttl_ms / 1000:
            # The previous beat, still within its TTL, is gone: Redis lost its data (a restart), leases included.
            self._leases_judged_from = time.monotonic() + p.LEASE_TTL_S
        self._last_beat = sent
        checks = len(running) + len(leased)
        cancelled_flags = results[len(results) - checks:len(results) - len(leased)]
        lease_flags = results[len(results) - len(leased):]
        seconds, micros = results[len(results) - checks - 1]
        self._clock_offset_ms = seconds * 1000 + micros / 1000 - (before + time.time()) / 2 * 1000
        for request_id, cancelled in zip(running, cancelled_flags):
            if cancelled and request_id not in self._cancels_sent:
                self._cancel(request_id)
        if time.monotonic() < self._leases_judged_from:
            return
        for request_id, held in zip(leased, lease_flags):
            if held or request_id in self._cancels_sent:
                continue
            with self._cond:
                started = request_id in self._submitted  # one not yet started is looked at before it starts
            if started:
                log.warning("cancelling %s: the API process following it let its lease lapse", request_id)
                self._cancel(request_id)

    def _prune_consumers(self) -> None:
        consumers = self._redis.xinfo_consumers(self._requests_key, p.GROUP)
        for c in consumers:
            name = c.get("name")
            if name == self.worker_id or c.get("idle", 0) < CONSUMER_DEAD_IDLE_MS:
                continue
            if self._redis.exists(p.heartbeat_key(self.model_id, name)):
                continue
            # Entries it read but never claimed (it died in between): their API processes gave them up
            # as not claimed long ago; delete them so they stop counting as queued.
            stuck = [e["message_id"] for e in self._redis.xpending_range(
                self._requests_key, p.GROUP, min="-", max="+", count=1000, consumername=name)]
            if stuck:
                pipe = self._redis.pipeline(transaction=True)
                pipe.xack(self._requests_key, p.GROUP, *stuck)
                pipe.xdel(self._requests_key, *stuck)
                pipe.execute()
            self._redis.xgroup_delconsumer(self._requests_key, p.GROUP, name)
            self._redis.zrem(self._workers_key, name)
            log.info("removed consumer %s of a worker that is gone (%d unclaimed entries dropped)", name,
                     len(stuck))

    def _redis_now_ms(self) -> float:
        return time.time() * 1000 + self._clock_offset_ms

    # -- canceller thread -----------------------------------------------------

    def _cancel(self, request_id: str) -> None:
        with self._cond:
            if request_id not in self._submitted:
                return  # not ours, or not in the engine yet: the heartbeat finds its cancel key later
            self._cancels_sent.add(request_id)
        log.debug("cancelling %s", request_id)
        self._engine.cancel(request_id)

    def _canceller_loop(self) -> None:
        pubsub = None
        while not self._stop_canceller.is_set():
            try:
                if pubsub is None:
                    pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(p.cancel_channel(self.model_id))
                message = pubsub.get_message(timeout=0.5)
                if message and message.get("type") == "message":
                    self._cancel(str(message["data"]))
            except redis.RedisError as exc:
                # Missed messages are caught by the heartbeat's check of the cancel keys.
                log.warning("cancel channel failed: %s", exc)
                if pubsub is not None:
                    self._safely(pubsub.close)
                pubsub = None
                self._stop_canceller.wait(0.5)
        if pubsub is not None:
            self._safely(pubsub.close)

