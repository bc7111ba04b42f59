"""The API side of the worker queue: the same calls as the in-process backend, served by workers.

tokenizer() loads a ChatTokenizer per model here, once, for the API to encode prompts; generate() puts the request
on the model's stream and follows its event stream; cancel() tells the worker.

A request always ends with exactly one final event. When no worker delivers one, this backend
makes it up: error_code "not_claimed" when no worker took the request within `claim_timeout`,
"worker_lost" when the worker that took it stopped beating. Its completion_tokens is the last count
the worker reported, so the request is charged for what was generated and nothing more.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from inference.availability import ModelUnavailable, NoCapacity
from inference.engine.types import FINISH_CANCELLED, FINISH_ERROR, GenerationRequest, TokenEvent
from inference.queue import protocol as p

log = logging.getLogger(__name__)

RETRY_AFTER_NO_WORKER = 5
RETRY_AFTER_QUEUE_FULL = 2
LOST_CONTACT_S = 5.0  # Redis unreachable this long while following a request: give it up


@dataclass
class _Ticket:
    model_id: str
    entry_id: str
    prompt_tokens: int
    claim_deadline: float  # time.monotonic()


class _Client:
    """One redis.asyncio client (and its scripts) per event loop: connections belong to a loop."""

    def __init__(self, url: str, block_ms: int):
        self.redis = aioredis.Redis.from_url(url, decode_responses=True, protocol=2, socket_connect_timeout=5,
                                             socket_timeout=max(5.0, block_ms / 1000 * 5))
        self.enqueue = self.redis.register_script(p.ENQUEUE_SCRIPT)


class RedisBackend:
    def __init__(self, url: str, *, queue_limit: int = 256, claim_timeout: float = 30.0, block_ms: int = 500):
        self.url = url
        self.queue_limit = queue_limit
        self.claim_timeout = claim_timeout  # seconds a request may wait for a worker to take it
        self.block_ms = block_ms  # XREAD BLOCK; also how often a silent worker's heartbeat is checked
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._tokenizers: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()
        self._tickets: dict[str, _Ticket] = {}  # enqueued, not yet followed
        self._following: set[str] = set()
        self._cancelled: set[str] = set()  # cancelled here while followed
        self._tasks: set[asyncio.Task] = set()
        self._sync: redis.Redis | None = None

    def _client(self) -> _Client:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = _Client(self.url, self.block_ms)
        return client

    # -- tokenizer ------------------------------------------------------------

    def _tokenizer(self, spec):
        key = (spec.id, str(spec.path))
        with self._lock:
            tokenizer = self._tokenizers.get(key)
            if tokenizer is None:
                from inference.engine.tokenizer import ChatTokenizer

                try:
                    tokenizer = ChatTokenizer.from_pretrained(str(spec.path))
                except Exception as exc:
                    log.exception("could not load the tokenizer of %s from %s", spec.id, spec.path)
                    raise ModelUnavailable(f"model {spec.id} could not be loaded") from exc
                self._tokenizers[key] = tokenizer
            return tokenizer

    async def tokenizer(self, spec):
        """The model's ChatTokenizer, loaded once in this process."""
        return await asyncio.to_thread(self._tokenizer, spec)

    # -- admission --------------------------------------------------------------

    async def _live_workers(self, r: aioredis.Redis, model_id: str) -> list[str]:
        members = await r.zrange(p.workers_key(model_id), 0, -1)
        if not members:
            return []
        async with r.pipeline(transaction=False) as pipe:
            for worker in members:
                pipe.exists(p.heartbeat_key(model_id, worker))
            alive = await pipe.execute()
        dead = [w for w, ok in zip(members, alive) if not ok]
        if dead:
            await r.zrem(p.workers_key(model_id), *dead)
        return [w for w, ok in zip(members, alive) if ok]

    def _no_worker(self, model_id: str) -> NoCapacity:
        return NoCapacity(f"No inference worker is serving {model_id} right now. Please retry shortly.",
                          code="no_worker", retry_after=RETRY_AFTER_NO_WORKER)

    def _queue_full(self, model_id: str) -> NoCapacity:
        return NoCapacity(f"Too many requests are waiting for {model_id}. Please retry shortly.",
                          code="queue_full", retry_after=RETRY_AFTER_QUEUE_FULL)

    async def check_available(self, spec) -> None:
        """Raise NoCapacity when a request for this model would be refused now (no hold needed to ask)."""
        r = self._client().redis
        try:
            if not await self._live_workers(r, spec.id):
                raise self._no_worker(spec.id)
            queued = await r.xlen(p.requests_key(spec.id))
        except redis.RedisError as exc:
            log.error("inference queue unreachable: %s", exc)
            raise ModelUnavailable("The inference queue cannot be reached. Please retry shortly.") from exc
        if queued >= self.queue_limit:
            raise self._queue_full(spec.id)

    async def enqueue(self, spec, request: GenerationRequest) -> None:
        """Put the request on the model's stream, or raise NoCapacity; generate() then follows it."""
        self._tickets[request.request_id] = await self._enqueue(spec, request)

    async def _enqueue(self, spec, request: GenerationRequest) -> _Ticket:
        payload = p.encode_request(request)  # refuses requests that cannot cross a process boundary
        client = self._client()
        try:
            if not await self._live_workers(client.redis, spec.id):
                raise self._no_worker(spec.id)
            entry_id = await client.enqueue(
                keys=[p.requests_key(spec.id)],
                args=[self.queue_limit, "request", payload, "claim_timeout_ms", int(self.claim_timeout * 1000)],
            )
        except redis.RedisError as exc:
            log.error("inference queue unreachable: %s", exc)
            raise ModelUnavailable("The inference queue cannot be reached. Please retry shortly.") from exc
        if entry_id is None:
            raise self._queue_full(spec.id)
        return _Ticket(spec.id, entry_id, len(request.prompt_token_ids), time.monotonic() + self.claim_timeout)

    # -- generate ---------------------------------------------------------------

    async def generate(self, spec, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """Token events for the request, ending with exactly one final event."""
        request_id = request.request_id
        ticket = self._tickets.pop(request_id, None)
        if ticket is None:
            ticket = await self._enqueue(spec, request)  # raises NoCapacity before anything is queued
        self._following.add(request_id)
        try:
            async for event in self._follow(ticket, request_id):
                if event.finished:
                    self._forget(request_id)
                    yield event
                    return
                yield event
        finally:
            self._forget(request_id)

    def _forget(self, request_id: str) -> None:
        self._following.discard(request_id)
        self._cancelled.discard(request_id)

    async def _follow(self, ticket: _Ticket, request_id: str) -> AsyncIterator[TokenEvent]:
        r = self._client().redis
        key = p.events_key(request_id)
        state = _Followed()
        unreachable_since = None

        def final(reason: str, code: str | None = None, error: str | None = None) -> TokenEvent:
            return TokenEvent(request_id, finished=True, finish_reason=reason, error=error, error_code=code,
                              prompt_tokens=ticket.prompt_tokens, completion_tokens=state.completion_tokens)

        while True:
            try:
                reply = await r.xread({key: state.last_id}, count=512, block=self.block_ms)
                events = state.absorb(reply)
                for event in events:
                    if event.finished:
                        await self._linger(r, key)
                    yield event
                    if event.finished:
                        return
                if state.worker is None:
                    cancelled = request_id in self._cancelled
                    if cancelled or time.monotonic() >= ticket.claim_deadline:
                        outcome = p.CLAIM_CANCELLED if cancelled else p.CLAIM_ABANDONED
                        if await r.set(p.claim_key(request_id), outcome, nx=True, ex=p.CLAIM_TTL_S):
                            # No worker has it, and now none ever will.
                            await r.xdel(p.requests_key(ticket.model_id), ticket.entry_id)
                            await self._linger(r, key)
                            if cancelled:
                                yield final(FINISH_CANCELLED)
                            else:
                                yield final(FINISH_ERROR, p.ERROR_NOT_CLAIMED,
                                            "No inference worker took the request in time.")
                            return
                        # A worker won the claim: its "claimed" entry is already in the stream.
                        state.worker = await r.get(p.claim_key(request_id))
                elif not events and not await r.exists(p.heartbeat_key(ticket.model_id, state.worker)):
                    # Lost: deliver whatever it managed to publish, then settle for that.
                    for event in state.absorb(await r.xread({key: state.last_id}, count=100_000)):
                        if event.finished:
                            await self._linger(r, key)
                        yield event
                        if event.finished:
                            return
                    log.warning("worker %s stopped while running %s (%d tokens generated)", state.worker,
                                request_id, state.completion_tokens)
                    await self._linger(r, key)
                    # In case it is only slow to beat: it must not go on generating for nobody.
                    await self._send_cancel(ticket.model_id, request_id)
                    yield final(FINISH_ERROR, p.ERROR_WORKER_LOST,
                                "The inference worker running the request stopped.")
                    return
                unreachable_since = None
            except _UnreadableEvent as exc:
                log.error("unreadable event for %s from worker %s: %s", request_id, state.worker, exc)
                await self._send_cancel(ticket.model_id, request_id)
                yield final(FINISH_ERROR, None, "The inference worker sent an unreadable event.")
                return
            except redis.RedisError as exc:
                now = time.monotonic()
                if unreachable_since is None:
                    unreachable_since = now
                    log.warning("inference queue unreachable while following %s: %s", request_id, exc)
                if now - unreachable_since >= LOST_CONTACT_S:
                    yield final(FINISH_ERROR, p.ERROR_WORKER_LOST, "Lost contact with the inference queue.")
                    return
                await asyncio.sleep(0.2)

    @staticmethod
    async def _linger(r: aioredis.Redis, key: str) -> None:
        try:
            await r.expire(key, p.EVENTS_LINGER_S)
        except redis.RedisError:
            pass  # it expires after EVENTS_TTL_S anyway

    # -- cancel -----------------------------------------------------------------

    def cancel(self, spec, request_id: str) -> None:
        if request_id in self._following or request_id in self._tickets:
            self._cancelled.add(request_id)  # if no worker took it yet, generate() withdraws it itself
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            task = loop.create_task(self._send_cancel(spec.id, request_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        try:
            if self._sync is None:
                self._sync = redis.Redis.from_url(self.url, decode_responses=True, protocol=2, socket_timeout=5)
            self._send_cancel_with(self._sync.pipeline(transaction=False), spec.id, request_id).execute()
        except redis.RedisError as exc:
            log.error("could not cancel %s: %s", request_id, exc)

    @staticmethod
    def _send_cancel_with(pipe, model_id: str, request_id: str):
        pipe.set(p.cancel_key(request_id), "1", ex=p.CANCEL_TTL_S)  # for a worker that misses the message
        pipe.publish(p.cancel_channel(model_id), request_id)
        return pipe

    async def _send_cancel(self, model_id: str, request_id: str) -> None:
        try:
            async with self._client().redis.pipeline(transaction=False) as pipe:
                await self._send_cancel_with(pipe, model_id, request_id).execute()
        except redis.RedisError as exc:
            log.error("could not cancel %s: %s", request_id, exc)


class _UnreadableEvent(Exception):
    pass


class _Followed:
    """What has been read of one request's event stream."""

    def __init__(self):
        self.last_id = "0-0"
        self.worker: str | None = None
        self.completion_tokens = 0

    def absorb(self, reply) -> list[TokenEvent]:
        events = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                kind = fields.get("kind")
                if kind == p.KIND_CLAIMED:
                    self.worker = fields.get("worker")
                elif kind == p.KIND_EVENT:
                    try:
                        event = p.decode_event(fields["event"])
                    except (KeyError, TypeError, ValueError) as exc:
                        raise _UnreadableEvent(f"{entry_id}: {exc!r}") from exc
                    self.completion_tokens = event.completion_tokens
                    events.append(event)
        return events
