"""One playground turn: the shared chat pipeline, paid for by the organization, streamed over the socket.

The turn runs exactly what `/v1/chat/completions` runs (inference.chat.lifecycle) with no API key:
the organization's rate limits, a hold, the same Generation that settles it. The socket gets
`start`, then one `delta` per piece of text, then `done` (usage, cost, finish reason) or `error`.
"""
import logging
import time
import uuid

from asgiref.sync import sync_to_async

from billing.models import UsageRecord
from billing.services import account_for
from core.errors import APIError, outage_of, ws_message
from core.money import usd_exact
from inference.api import chunks
from inference.chat import lifecycle
from inference.chat.errors import generation_failed, invalid
from inference.chat.limits import RequestLimits

log = logging.getLogger(__name__)

# What the page may set; everything else keeps the API's defaults (one choice, no tools, no session).
FIELDS = ("model", "messages", "temperature", "max_tokens")
_ENDED = ("stop", "length", "cancelled")


def chat_body(message: dict) -> dict:
    """The chat-completions body of a `chat` message, or a 400 naming a field the playground does not take."""
    for name in sorted(message):
        if name != "type" and name not in FIELDS:
            raise invalid(f"'{name}' cannot be set in the playground; it takes {', '.join(FIELDS)}.", name,
                          "unknown_parameter")
    return {name: message[name] for name in FIELDS if name in message}


def _settled(request_id: str, organization):
    record = UsageRecord.objects.filter(request_id=request_id).first()
    return record, account_for(organization=organization).available_micro


class Turn:
    def __init__(self, organization, send):
        self.organization = organization
        self.send = send  # async callable taking a message; False once the page has gone
        self.request_id = f"chatcmpl-{uuid.uuid4().hex}"
        self.generation = None
        self.stopped = False

    def stop(self) -> None:
        """Cancel the generation: the turn ends with what was generated and is charged for that only."""
        self.stopped = True
        if self.generation is not None:
            self.generation.cancel()

    async def run(self, message: dict) -> None:
        limits = RequestLimits()
        try:
            chat = await lifecycle.admit(chat_body(message), lifecycle.Caller(self.organization, auto_session=False),
                                         request_id=self.request_id, started=time.monotonic(), limits=limits)
        except APIError as exc:
            await self._send(ws_message(exc))
            return
        self.generation = generation = chat.generation
        generation.start()
        try:
            await self._send({"type": "start", "request_id": self.request_id, "model": chat.request.model})
            while True:
                if self.stopped:
                    generation.cancel()  # again: a cancel sent before the engine had the request is lost
                event = await generation.events.get()
                if event.index == 0 and event.text:
                    await self._send({"type": "delta", "text": event.text})
                if event.finished:
                    break
        finally:
            generation.cancel()  # no-op once finished
        await self._send(await self._done(event))

    async def _send(self, message: dict) -> None:
        """Send to the page; once it has gone, the turn stops and is charged for what was generated."""
        if not await self.send(message):
            self.stop()

    async def _done(self, event) -> dict:
        """The end of the turn; the Generation has settled the hold before it delivers its final event."""
        try:
            record, available = await sync_to_async(_settled)(self.request_id, self.organization)
        except Exception as exc:
            if outage_of(exc) is None:
                raise
            record, available = None, None  # its cost shows on the usage page once the database is back
        done = {
            "type": "done", "request_id": self.request_id, "finish_reason": event.finish_reason,
            "usage": chunks.usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens),
            "cost_micro": record.cost_micro if record else None,
            "cost_usd": usd_exact(record.cost_micro) if record else None,
            "available_usd": usd_exact(available) if available is not None else None,
        }
        if event.finish_reason not in _ENDED:
            done["error"] = ws_message(generation_failed(event))["error"]
        return done
