"""One request's run on a model, settled exactly once whatever the client does.

The run lives in its own task, apart from the response: a client that goes away
only cancels the generation, and the task still receives the engine's final
event with the exact token counts and settles the hold from it.
"""
import asyncio
import dataclasses
import logging
import time

from asgiref.sync import sync_to_async

from billing import liveness
from billing.models import Hold, UsageRecord
from billing.services import hold_settle
from core.errors import DATABASE, DATABASE_UNAVAILABLE, discard_broken_connections, outage_of
from core.money import cached_within
from inference.chat import metrics
from inference.engine.types import GenerationRequest, TokenEvent

log = logging.getLogger(__name__)

_STATUS = {"stop": UsageRecord.Status.COMPLETED, "length": UsageRecord.Status.COMPLETED,
           "cancelled": UsageRecord.Status.CANCELLED}
_running: set[asyncio.Task] = set()  # keeps tasks referenced until they finish
# A finished request whose charge cannot be written because the database is unreachable tries again for this long,
# its heartbeat going on with its final count (the sweeper leaves the hold alone); past it, its client gets a 503
# and the hold is left to the sweeper, which releases it: nothing is charged for an answer that was not delivered.
SETTLE_PATIENCE_S = 30.0
SETTLE_RETRY_MAX_S = 2.0


class Generation:
    def __init__(self, *, backend, spec, request: GenerationRequest, hold: Hold, started: float, on_settled=None):
        self.backend = backend
        self.spec = spec
        self.request = request
        self.hold = hold
        self.started = started
        self.on_settled = on_settled  # awaited with the usage record once the hold is settled
        self.events: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self.finished = False
        self.completion_tokens = 0
        self.first_token_at: float | None = None  # time.monotonic() when the first token was handed on

    def start(self) -> None:
        task = asyncio.create_task(self._run())
        _running.add(task)
        task.add_done_callback(_running.discard)

    def cancel(self) -> None:
        if not self.finished:
            self.backend.cancel(self.spec, self.request.request_id)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Tells the hold sweeper this request is alive, with its token count, until `stop` is set; a beat under way
        is finished first, so none lands after the request's entries are forgotten."""
        while not stop.is_set():
            await self._beat()
            try:
                await asyncio.wait_for(stop.wait(), liveness.HEARTBEAT_S)
            except TimeoutError:
                pass

    async def _beat(self) -> None:
        try:
            await sync_to_async(liveness.beat)(self.request.request_id, completion_tokens=self.completion_tokens,
                                               prompt_tokens=self.request.num_prompt_tokens)
        except Exception:  # a missed heartbeat only lets the sweeper act a little early
            log.warning("heartbeat of %s failed", self.request.request_id, exc_info=True)

    async def _run(self) -> None:
        final = None
        stop_beating = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(stop_beating))
        try:
            final = await self._follow(heartbeat, stop_beating)
        finally:
            stop_beating.set()
            self.finished = True
            # Always one final event: the response waits for it (an error if this task itself was interrupted).
            self.events.put_nowait(final or TokenEvent(
                self.request.request_id, finished=True, finish_reason="error", error="generation interrupted",
                prompt_tokens=self.request.num_prompt_tokens, completion_tokens=self.completion_tokens))

    async def _follow(self, heartbeat: asyncio.Task, stop_beating: asyncio.Event) -> TokenEvent:
        """The engine's events handed on, then the hold settled; the final event to deliver."""
        final = None
        try:
            async for event in self.backend.generate(self.spec, self.request):
                if event.finished:
                    final = event
                    break
                self.completion_tokens = event.completion_tokens
                if self.first_token_at is None and event.completion_tokens:
                    self.first_token_at = time.monotonic()
                    metrics.first_token(self.spec.id, self.first_token_at - self.started)
                self.events.put_nowait(event)
        except Exception as exc:
            log.exception("generation %s failed", self.request.request_id)
            final = TokenEvent(self.request.request_id, finished=True, finish_reason="error", error=str(exc),
                               prompt_tokens=self.request.num_prompt_tokens)
        if final is None:  # the backend ended without a final event: treat as a failure
            final = TokenEvent(self.request.request_id, finished=True, finish_reason="error",
                               error="generation ended unexpectedly", prompt_tokens=self.request.num_prompt_tokens)
        self.finished = True
        final = self._checked(final)
        self.completion_tokens = final.completion_tokens  # what the heartbeats carry while it settles
        record, unreachable = await self._settle(final)
        stop_beating.set()
        await heartbeat
        if record is not None or unreachable:
            # Settled: the entries are done with. Unreachable: without them the sweeper releases the hold.
            await self._forget()
        if record is not None:
            await self._settled(record)
        if unreachable:
            return dataclasses.replace(final, finish_reason="error", error_code=DATABASE_UNAVAILABLE,
                                       error="the database could not record the charge")
        return final

    def _checked(self, final: TokenEvent) -> TokenEvent:
        """The final event with a cached count the response and the bill can both use (0..prompt_tokens)."""
        cached = cached_within(final.cached_tokens, final.prompt_tokens)
        if cached == final.cached_tokens:
            return final
        log.error("generation %s reported %s cached of %s prompt tokens; counted as %s", self.request.request_id,
                  final.cached_tokens, final.prompt_tokens, cached)
        return dataclasses.replace(final, cached_tokens=cached)

    async def _settle(self, final: TokenEvent) -> tuple[UsageRecord | None, bool]:
        """(the usage record, False) once the hold is settled; (None, True) when the database stayed unreachable
        for SETTLE_PATIENCE_S; (None, False) on any other failure.

        hold_settle is one transaction and idempotent: a try whose commit was lost on the way is found settled
        by the next, never charged twice.
        """
        deadline = time.monotonic() + SETTLE_PATIENCE_S
        delay = 0.1
        while True:
            try:
                return await sync_to_async(_settle_hold)(
                    hold=self.hold,
                    prompt_tokens=final.prompt_tokens,
                    completion_tokens=final.completion_tokens,
                    cached_tokens=final.cached_tokens,
                    status=_STATUS.get(final.finish_reason, UsageRecord.Status.FAILED),
                    finish_reason=final.finish_reason or "",
                    latency_ms=int((time.monotonic() - self.started) * 1000),
                ), False
            except Exception as exc:
                if outage_of(exc) != DATABASE:
                    # The hold stays active and visible (the sweeper settles it from the last heartbeat once that
                    # lapses); it is never charged twice.
                    log.exception("could not settle %s", self.request.request_id)
                    return None, False
                if delay == 0.1:  # the first failure: the sweeper's view of it gets the final count at once
                    await self._beat()
                if time.monotonic() + delay > deadline:
                    log.error("could not settle %s: the database stayed unreachable for %ss; its hold is left to "
                              "the sweeper", self.request.request_id, SETTLE_PATIENCE_S)
                    return None, True
                log.warning("settling %s waits for the database: %s", self.request.request_id, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, SETTLE_RETRY_MAX_S)

    async def _forget(self) -> None:
        try:
            await sync_to_async(liveness.forget)(self.request.request_id)
        except Exception:  # Redis down: the entries expire by themselves
            log.warning("could not forget the heartbeat of %s", self.request.request_id, exc_info=True)

    async def _settled(self, record: UsageRecord) -> None:
        if self.on_settled is None:
            return
        try:
            await self.on_settled(record)
        except Exception:
            log.exception("the settlement callback of %s failed", self.request.request_id)


def _settle_hold(**kwargs) -> UsageRecord:
    """hold_settle on a working connection: one that broke on an earlier try is closed first (same thread)."""
    discard_broken_connections()
    return hold_settle(**kwargs)
