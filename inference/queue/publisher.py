"""The worker's publisher: the outbox of TokenEvents and the thread that writes them to Redis.

Django-free, like the worker it is part of (`inference.queue.worker.Worker` mixes it in).

Thread:
  publisher   XADDs every TokenEvent the engine reports to the request's event stream, in order, in
              batches. Entry ids are explicit (0-1 is "claimed", 0-2... the events), so a batch retried
              after a connection error never duplicates an event. A request's final event goes with
              its final counts (p.final_key), which outlive the stream for the hold sweeper.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import redis

from inference.engine.types import TokenEvent
from inference.queue import protocol as p

log = logging.getLogger("inference.queue.worker")  # the worker's logger, as before the split

PUBLISH_BATCH = 256


class PublisherMixin:
    """The publisher thread of a Worker, which sets up every attribute used here."""

    _cond: threading.Condition
    _inflight: dict[str, int]
    _submitted: set[str]
    _leased: set[str]
    _outbox: queue.Queue[TokenEvent]
    _seq: dict[str, int]
    _signals: int
    _stop_publisher: threading.Event
    _cancels_sent: set[str]
    _redis: redis.Redis | None
    _redis_now_ms: Callable[[], float]

    # -- publisher thread -----------------------------------------------------

    def _seq_init(self, request_id: str) -> None:
        # Called before the first event of the request is queued, so the publisher sees it in order.
        self._outbox.put(_Start(request_id))

    def _publisher_loop(self) -> None:
        while True:
            try:
                first = self._outbox.get(timeout=0.1)
            except queue.Empty:
                if self._stop_publisher.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < PUBLISH_BATCH:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            self._publish(batch)

    def _publish(self, batch: list) -> None:
        rows = []  # (request id, entry id, encoded event, finished)
        finals: dict[str, str] = {}  # request id -> its final counts (p.encode_final)
        for item in batch:
            if isinstance(item, _Start):
                self._seq[item.request_id] = 2  # 0-1 is the "claimed" entry
                continue
            seq = self._seq.get(item.request_id, 2)
            self._seq[item.request_id] = seq + 1
            rows.append((item.request_id, f"0-{seq}", p.encode_event(item), item.finished))
            if item.finished:
                # The counts the request is charged, kept apart from the event stream (which expires within
                # minutes) for the hold sweeper, in case the API process that would settle it is gone.
                finals[item.request_id] = p.encode_final(item, self._redis_now_ms())
        if not rows:
            return
        delay = 0.05
        while True:
            pipe = self._redis.pipeline(transaction=False)
            for request_id, entry_id, data, _ in rows:
                pipe.xadd(p.events_key(request_id), {"kind": p.KIND_EVENT, "event": data}, id=entry_id)
            for request_id in {r[0] for r in rows}:
                pipe.expire(p.events_key(request_id), p.EVENTS_TTL_S)
            for request_id, final in finals.items():  # after the events, so all of them precede it
                pipe.set(p.final_key(request_id), final, ex=p.FINAL_TTL_S)
            try:
                results = pipe.execute(raise_on_error=False)
            except redis.RedisError as exc:
                if self._signals >= 3:
                    return
                log.warning("publishing events failed (%s); retrying", exc)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            for (request_id, entry_id, _, _), result in zip(rows, results):
                # "equal or smaller than the target stream top item": written by an earlier try.
                if isinstance(result, Exception) and "equal or smaller" not in str(result):
                    log.error("event %s of %s not written: %s", entry_id, request_id, result)
            for request_id, result in zip(finals, results[len(results) - len(finals):]):
                if isinstance(result, Exception):
                    log.error("final counts of %s not written: %s", request_id, result)
            break
        finished = [r[0] for r in rows if r[3]]
        if finished:
            with self._cond:
                for request_id in finished:
                    self._inflight.pop(request_id, None)
                    self._submitted.discard(request_id)
                    self._leased.discard(request_id)
                    self._seq.pop(request_id, None)
                    self._cancels_sent.discard(request_id)
                self._cond.notify_all()


class _Start:
    """Marks, in the outbox, where a request's events begin."""

    __slots__ = ("request_id",)

    def __init__(self, request_id: str):
        self.request_id = request_id
