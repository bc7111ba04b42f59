"""The API side of the worker queue: the same calls as the in-process backend, served by workers.

tokenizer() loads a ChatTokenizer per model here, once, for the API to encode prompts: a web host needs only the model's
tokenizer files (`prepare_model --tokenizer-only`), the workers hold the weights; published() says which models live
workers serve, files here or not; generate() puts the request on the model's stream and follows its event stream;
cancel() tells the worker.

A request always ends with exactly one final event. When no worker delivers one, this backend
makes it up: error_code "not_claimed" when no worker took the request within `claim_timeout`,
"worker_lost" when the worker that took it stopped beating, or when its events were lost (Redis restarted
without its data: the request's event stream is gone for EVENTS_LOST_GRACE_S, or comes back with a gap in its
entry ids), and "cancelled" when a request cancelled here gets no final event within CANCEL_GRACE_S. Its
completion_tokens is the last count read, so the request is charged for what was delivered and nothing more.

While it follows a request, this process holds the request's lease (protocol.lease_key): set before the
request is queued and renewed every `lease_renew_s` by one task per event loop, whatever pace the response
is read at. If this process dies, the lease lapses within `lease_ttl_s` and the worker cancels the request.
Once the final event is read, the worker's final counts (protocol.final_key) are deleted: this process
settles the hold itself. Left behind by a process that died, they are what billing's hold sweeper charges
(final_counts(), registered with billing by inference.apps).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
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
from inference.queue.stream import Followed, UnreadableEvent

log = logging.getLogger(__name__)

RETRY_AFTER_NO_WORKER = 5
RETRY_AFTER_QUEUE_FULL = 2
LOST_CONTACT_S = 5.0  # Redis unreachable this long while following a request: give it up
# A claimed request's event stream missing this long: Redis lost it (a restart without persistence) and no worker
# writes to it any more (a worker still running the request recreates it with its next events).
EVENTS_LOST_GRACE_S = 5.0
CANCEL_GRACE_S = 10.0  # a request cancelled here whose worker sends no final event for this long: ended here
WINDOW_TTL_S = 1.0  # how long the context window live workers give a model is taken as known


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
        self.leases: set[str] = set()  # requests followed on this loop, whose leases `renewer` renews
        self.renewer: asyncio.Task | None = None


class RedisBackend:
    def __init__(self, url: str, *, queue_limit: int = 256, claim_timeout: float = 30.0, block_ms: int = 500,
                 lease_ttl_s: float = p.LEASE_TTL_S, lease_renew_s: float = p.LEASE_RENEW_S):
        if not 0 < lease_renew_s < lease_ttl_s:
            raise ValueError("lease_renew_s must be positive and shorter than lease_ttl_s")
        self.url = url
        self.queue_limit = queue_limit
        self.claim_timeout = claim_timeout  # seconds a request may wait for a worker to take it
        self.block_ms = block_ms  # XREAD BLOCK; also how often a silent worker's heartbeat is checked
        self.lease_ttl_s = lease_ttl_s  # a request this process stops renewing is cancelled this long after
        self.lease_renew_s = lease_renew_s
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._tokenizers: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()
        self._tickets: dict[str, _Ticket] = {}  # enqueued, not yet followed
        self._following: set[str] = set()
        self._cancelled: dict[str, float] = {}  # cancelled here while followed: time.monotonic() of the cancel
        self._tasks: set[asyncio.Task] = set()
        self._sync: redis.Redis | None = None
        self._windows: dict[str, tuple[int | None, float]] = {}  # model id -> (its workers' window, when asked)

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

                if not spec.has_tokenizer:  # the workers have the model; this host cannot read its prompts
                    raise ModelUnavailable(
                        f"This web host lacks the tokenizer files of {spec.id} (none in {spec.path}): the inference "
                        "workers serve it, but the web host tokenizes its prompts. Prepare them on every web host "
                        f"with `manage.py prepare_model --tokenizer-only` (--model {spec.id} --source DIR, a "
                        "checkpoint of it, for a model other than the default).")
                try:
                    tokenizer = ChatTokenizer.from_pretrained(str(spec.path))
                except Exception as exc:
                    log.exception("could not load the tokenizer of %s from %s", spec.id, spec.path)
                    raise ModelUnavailable(f"model {spec.id} could not be loaded") from exc
                self._tokenizers[key] = tokenizer
            return tokenizer

    async def tokenizer(self, spec):
        """The model's ChatTokenizer, loaded once in this process (ModelUnavailable without its files here)."""
        return await asyncio.to_thread(self._tokenizer, spec)

    def warm_up(self, spec) -> None:
        """Load the model's tokenizer and render one chat with it: what a first request would otherwise wait for
        (blocking: called by the warm start's thread, see inference.dispatch)."""
        self._tokenizer(spec).encode_chat([{"role": "user", "content": "Hello!"}])

    async def context_window(self, spec, tokenizer) -> int:
        """The window requests for the model are checked against: the smallest its live workers give it (a worker's
        --max-model-len, or what its KV cache holds), else the model's own (its tokenizer's). Asked of Redis at most
        once every WINDOW_TTL_S; unreachable, the model's own (admission answers the outage)."""
        window = await self._known_window(spec)
        return min(window, tokenizer.context_window) if window else tokenizer.context_window

    async def served_window(self, spec) -> int | None:
        """The window GET /v1/models reports, loading nothing: what context_window gives once this host's tokenizer
        is loaded; before, or without the model's files here, its config.json's and its live workers'."""
        tokenizer = self._tokenizers.get((spec.id, str(spec.path)))
        own = tokenizer.context_window if tokenizer is not None else spec.config_window
        return min((w for w in (await self._known_window(spec), own) if w), default=None)

    async def _known_window(self, spec) -> int | None:
        """The smallest window the model's live workers report (None: no worker says, or Redis is unreachable),
        cached for WINDOW_TTL_S."""
        now = time.monotonic()
        known = self._windows.get(spec.id)
        if known is None or now - known[1] >= WINDOW_TTL_S:
            try:
                window = await self._workers_window(self._client().redis, spec.id)
            except redis.RedisError:
                window = None
            known = self._windows[spec.id] = (window, now)
        return known[0]

    @staticmethod
    async def _workers_window(r: aioredis.Redis, model_id: str) -> int | None:
        workers = await r.zrange(p.workers_key(model_id), 0, -1)
        if not workers:
            return None
        windows = []
        for raw in await r.mget([p.heartbeat_key(model_id, worker) for worker in workers]):
            try:
                window = json.loads(raw).get("context_window") if raw else None
            except (ValueError, AttributeError):
                continue
            if type(window) is int and window > 0:
                windows.append(window)
        return min(windows, default=None)

    async def published(self, model_ids) -> set[str]:
        """Those of `model_ids` that a live worker serves now, whatever files this host has of them
        (ModelUnavailable when the queue cannot be reached)."""
        r = self._client().redis
        try:
            return {model_id for model_id in model_ids if await self._live_workers(r, model_id)}
        except redis.RedisError as exc:
            log.error("inference queue unreachable: %s", exc)
            raise ModelUnavailable("The inference queue cannot be reached. Please retry shortly.") from exc

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
            # The lease first: a worker may take the request the moment it is queued. generate() renews it.
            await client.redis.set(p.lease_key(request.request_id), "1", px=self._lease_ms())
            entry_id = await client.enqueue(
                keys=[p.requests_key(spec.id)],
                args=[self.queue_limit, "request", payload, "claim_timeout_ms", int(self.claim_timeout * 1000),
                      "lease", "1"],
            )
        except redis.RedisError as exc:
            log.error("inference queue unreachable: %s", exc)
            raise ModelUnavailable("The inference queue cannot be reached. Please retry shortly.") from exc
        if entry_id is None:
            raise self._queue_full(spec.id)
        return _Ticket(spec.id, entry_id, request.num_prompt_tokens, time.monotonic() + self.claim_timeout)

    # -- generate ---------------------------------------------------------------

    async def generate(self, spec, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """Token events for the request, ending with exactly one final event."""
        request_id = request.request_id
        ticket = self._tickets.pop(request_id, None)
        if ticket is None:
            ticket = await self._enqueue(spec, request)  # raises NoCapacity before anything is queued
        self._following.add(request_id)
        client = self._client()
        self._hold_lease(client, request_id)
        try:
            async for event in self._follow(ticket, request_id):
                if event.finished:
                    self._forget(request_id)
                    self._release_lease(client, request_id)
                    yield event
                    return
                yield event
        finally:
            self._forget(request_id)
            self._release_lease(client, request_id)

    def _forget(self, request_id: str) -> None:
        self._following.discard(request_id)
        self._cancelled.pop(request_id, None)

    # -- leases -----------------------------------------------------------------

    def _lease_ms(self) -> int:
        return int(self.lease_ttl_s * 1000)

    def _hold_lease(self, client: _Client, request_id: str) -> None:
        client.leases.add(request_id)
        if client.renewer is None:
            client.renewer = asyncio.get_running_loop().create_task(self._renew_leases(client))

    @staticmethod
    def _release_lease(client: _Client, request_id: str) -> None:
        """Stop renewing (the key lapses by itself, or was deleted with the final event). The renewer is not
        cancelled: it ends at its next turn once it is no longer the loop's, never in the middle of a command (a
        Redis command cancelled mid-flight can leave its connection, and the task, hanging)."""
        client.leases.discard(request_id)
        if not client.leases:
            client.renewer = None

    async def _renew_leases(self, client: _Client) -> None:
        """Renew the leases of every request followed on this loop, every lease_renew_s, in one round trip.

        Its own task: neither a client slow to read its response nor a busy follower delays it."""
        me = asyncio.current_task()
        while True:
            await asyncio.sleep(self.lease_renew_s)
            if client.renewer is not me:  # nothing left to renew, or a newer renewer took over
                return
            held = list(client.leases)
            try:
                async with client.redis.pipeline(transaction=False) as pipe:
                    for request_id in held:
                        pipe.set(p.lease_key(request_id), "1", px=self._lease_ms())
                    await pipe.execute()
            except redis.RedisError as exc:
                # Past lease_ttl_s their workers cancel them; the followers give up after LOST_CONTACT_S anyway.
                log.warning("could not renew the leases of %d request(s): %s", len(held), exc)

    async def _follow(self, ticket: _Ticket, request_id: str) -> AsyncIterator[TokenEvent]:
        r = self._client().redis
        key = p.events_key(request_id)
        state = Followed()
        unreachable_since = None
        missing_since = None  # when the claimed request's event stream was first found gone

        def final(reason: str, code: str | None = None, error: str | None = None) -> TokenEvent:
            return TokenEvent(request_id, finished=True, finish_reason=reason, error=error, error_code=code,
                              prompt_tokens=ticket.prompt_tokens, completion_tokens=state.completion_tokens)

        while True:
            try:
                reply = await r.xread({key: state.last_id}, count=512, block=self.block_ms)
                events = await self._handed_on(r, request_id, state.absorb(reply))
                for event in events:
                    yield event
                if events and events[-1].finished:
                    return
                if state.gap is not None:
                    # Redis lost entries the worker wrote (it restarted without them): the answer has a hole.
                    log.error("entries %s up to %s of %s were lost by the inference queue; %d tokens were "
                              "delivered", *state.gap, request_id, state.completion_tokens)
                    await self._linger(r, request_id)
                    await self._send_cancel(ticket.model_id, request_id)
                    yield final(FINISH_ERROR, p.ERROR_WORKER_LOST, "The inference queue lost some of its events.")
                    return
                if state.worker is None:
                    cancelled = request_id in self._cancelled
                    if cancelled or time.monotonic() >= ticket.claim_deadline:
                        outcome = p.CLAIM_CANCELLED if cancelled else p.CLAIM_ABANDONED
                        if await r.set(p.claim_key(request_id), outcome, nx=True, ex=p.CLAIM_TTL_S):
                            # No worker has it, and now none ever will.
                            await r.xdel(p.requests_key(ticket.model_id), ticket.entry_id)
                            await self._linger(r, request_id)
                            if cancelled:
                                yield final(FINISH_CANCELLED)
                            else:
                                yield final(FINISH_ERROR, p.ERROR_NOT_CLAIMED,
                                            "No inference worker took the request in time.")
                            return
                        # A worker won the claim: its "claimed" entry is already in the stream.
                        state.worker = await r.get(p.claim_key(request_id))
                elif not events:
                    async with r.pipeline(transaction=False) as pipe:
                        pipe.exists(p.heartbeat_key(ticket.model_id, state.worker))
                        pipe.exists(key)
                        beating, kept = await pipe.execute()
                    if not beating:
                        # Lost: deliver whatever it managed to publish, then settle for that.
                        published = state.absorb(await r.xread({key: state.last_id}, count=100_000))
                        for event in await self._handed_on(r, request_id, published):
                            yield event
                            if event.finished:
                                return
                        log.warning("worker %s stopped while running %s (%d tokens generated)", state.worker,
                                    request_id, state.completion_tokens)
                        await self._linger(r, request_id)
                        # In case it is only slow to beat: it must not go on generating for nobody.
                        await self._send_cancel(ticket.model_id, request_id)
                        yield final(FINISH_ERROR, p.ERROR_WORKER_LOST,
                                    "The inference worker running the request stopped.")
                        return
                    now = time.monotonic()
                    missing_since = None if kept else missing_since or now
                    if missing_since is not None and now - missing_since >= EVENTS_LOST_GRACE_S:
                        # Its worker beats but writes nothing there: it finished the request (its final event
                        # went with the stream) or lost it too.
                        log.error("the event stream of %s is gone: the inference queue lost it (%d tokens were "
                                  "delivered)", request_id, state.completion_tokens)
                        await self._linger(r, request_id)
                        await self._send_cancel(ticket.model_id, request_id)
                        yield final(FINISH_ERROR, p.ERROR_WORKER_LOST, "The inference queue lost the request.")
                        return
                    cancelled_at = self._cancelled.get(request_id)
                    if cancelled_at is not None and now - cancelled_at >= CANCEL_GRACE_S:
                        log.warning("%s was cancelled %.0f s ago and worker %s sent no final event: ended here "
                                    "(%d tokens generated)", request_id, now - cancelled_at, state.worker,
                                    state.completion_tokens)
                        await self._linger(r, request_id)
                        yield final(FINISH_CANCELLED)
                        return
                unreachable_since = None
            except UnreadableEvent as exc:
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

    async def _handed_on(self, r: aioredis.Redis, request_id: str, events: list[TokenEvent]) -> list[TokenEvent]:
        """The events read, as they are handed on: up to the final one, which ends the request for this process
        (see _linger) and is reported as _unasked says."""
        for i, event in enumerate(events):
            if event.finished:
                await self._linger(r, request_id)
                return [*events[:i], self._unasked(event)]
        return events

    def _unasked(self, event: TokenEvent) -> TokenEvent:
        """A final event as this process reports it: a request its worker stopped unasked (it found the lease gone,
        as after Redis lost its data) failed as a lost one does, charged what was generated, not its prompt."""
        unasked = (event.finish_reason == FINISH_CANCELLED and event.request_id not in self._cancelled
                   or event.error_code == p.ERROR_LEASE_LAPSED)
        if not unasked:
            return event
        log.warning("worker stopped %s unasked (%s): the lease of this process was gone", event.request_id,
                    event.error_code or event.finish_reason)
        return dataclasses.replace(event, finish_reason=FINISH_ERROR, error_code=p.ERROR_WORKER_LOST,
                                   error="The inference worker stopped the request: it found its lease gone.")

    @staticmethod
    async def _linger(r: aioredis.Redis, request_id: str) -> None:
        """The request is over for this process: its events linger a little, its lease goes, and so do the
        worker's final counts (this process settles the hold from the final event it just read)."""
        try:
            async with r.pipeline(transaction=False) as pipe:
                pipe.expire(p.events_key(request_id), p.EVENTS_LINGER_S)
                pipe.delete(p.lease_key(request_id), p.final_key(request_id))
                await pipe.execute()
        except redis.RedisError:
            pass  # they expire after EVENTS_TTL_S, LEASE_TTL_S and FINAL_TTL_S anyway

    # -- cancel -----------------------------------------------------------------

    def cancel(self, spec, request_id: str) -> None:
        if request_id in self._following or request_id in self._tickets:
            self._cancelled.setdefault(request_id, time.monotonic())  # unclaimed: generate() withdraws it itself
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
            self._send_cancel_with(self._sync_redis().pipeline(transaction=False), spec.id, request_id).execute()
        except redis.RedisError as exc:
            log.error("could not cancel %s: %s", request_id, exc)

    def _sync_redis(self) -> redis.Redis:
        if self._sync is None:
            self._sync = redis.Redis.from_url(self.url, decode_responses=True, protocol=2, socket_timeout=5)
        return self._sync

    # -- final counts, for the hold sweeper ---------------------------------------

    def final_counts(self, request_ids, *, chunk: int = 500) -> dict[str, dict]:
        """request id -> {"prompt_tokens", "completion_tokens", "cached_tokens", "finish_reason",
        "finished_at_ms"}: the final counts workers recorded for those of `request_ids` whose API process never
        read the final event (it died). Blocking; raises redis.RedisError when the queue cannot be reached."""
        ids = list(dict.fromkeys(request_ids))
        found = {}
        r = self._sync_redis()
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            for request_id, raw in zip(part, r.mget([p.final_key(request_id) for request_id in part])):
                if raw is None:
                    continue
                try:
                    final = p.decode_final(raw)
                except ValueError as exc:
                    log.error("unreadable final counts of %s: %s", request_id, exc)
                    continue
                final["finished_at_ms"] = final.pop("at_ms")
                found[request_id] = final
        return found

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
