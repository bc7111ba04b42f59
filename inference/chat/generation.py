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
from core.money import cached_within
from inference.chat import metrics
from inference.engine.types import GenerationRequest, TokenEvent

log = logging.getLogger(__name__)

_STATUS = {"stop": UsageRecord.Status.COMPLETED, "length": UsageRecord.Status.COMPLETED,
           "cancelled": UsageRecord.Status.CANCELLED}
_running: set[asyncio.Task] = set()  # keeps tasks referenced until they finish


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

    async def _heartbeat(self) -> None:
        """Tells the hold sweeper this request is alive, with its token count, until cancelled."""
        while True:
            try:
                await sync_to_async(liveness.beat)(self.request.request_id, completion_tokens=self.completion_tokens,
                                                   prompt_tokens=len(self.request.prompt_token_ids))
            except Exception:  # a missed heartbeat only lets the sweeper act a little early
                log.warning("heartbeat of %s failed", self.request.request_id, exc_info=True)
            await asyncio.sleep(liveness.HEARTBEAT_S)

    async def _run(self) -> None:
        final = None
        heartbeat = asyncio.create_task(self._heartbeat())
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
                               prompt_tokens=len(self.request.prompt_token_ids))
        if final is None:  # the backend ended without a final event: treat as a failure
            final = TokenEvent(self.request.request_id, finished=True, finish_reason="error",
                               error="generation ended unexpectedly", prompt_tokens=len(self.request.prompt_token_ids))
        heartbeat.cancel()
        self.finished = True
        final = self._checked(final)
        await self._settle(final)
        self.events.put_nowait(final)

    def _checked(self, final: TokenEvent) -> TokenEvent:
        """The final event with a cached count the response and the bill can both use (0..prompt_tokens)."""
        cached = cached_within(final.cached_tokens, final.prompt_tokens)
        if cached == final.cached_tokens:
            return final
        log.error("generation %s reported %s cached of %s prompt tokens; counted as %s", self.request.request_id,
                  final.cached_tokens, final.prompt_tokens, cached)
        return dataclasses.replace(final, cached_tokens=cached)

    async def _settle(self, final: TokenEvent) -> None:
        try:
            record = await sync_to_async(hold_settle)(
                hold=self.hold,
                prompt_tokens=final.prompt_tokens,
                completion_tokens=final.completion_tokens,
                cached_tokens=final.cached_tokens,
                status=_STATUS.get(final.finish_reason, UsageRecord.Status.FAILED),
                finish_reason=final.finish_reason or "",
                latency_ms=int((time.monotonic() - self.started) * 1000),
            )
        except Exception:
            # The hold stays active and visible (the sweeper settles it from the last heartbeat once that
            # lapses); it is never charged twice.
            log.exception("could not settle %s", self.request.request_id)
        else:
            await sync_to_async(liveness.forget)(self.request.request_id)
            await self._settled(record)

    async def _settled(self, record: UsageRecord) -> None:
        if self.on_settled is None:
            return
        try:
            await self.on_settled(record)
        except Exception:
            log.exception("the settlement callback of %s failed", self.request.request_id)
