"""The playground's WebSocket: a signed-in member of the organization current in their session chats with
the models on that organization's credit.

Client → server: {"type": "chat", "model", "messages", "temperature", "max_tokens"}, {"type": "stop"},
{"type": "save", "model", "messages"}. Server → client: "ready" (the organization), then per turn
"start", "delta"s and "done" or "error" (turn.py); "saved" for a save. An error that does not end a
turn names its `action` (save, chat: a turn is already running, message: unreadable).

Refused connections are accepted only to be closed at once with a code and a reason the page shows:
4401 not signed in (or signed out since: the session is read again for every chat and save), 4403 not
a member of any organization (or no longer of this one). A message larger than PLAYGROUND_WS_MAX_BYTES
is refused unread (uvicorn's --ws-max-size should close such a socket before it gets here).
"""
import asyncio
import json
import logging
from importlib import import_module
from types import SimpleNamespace

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import auth
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.tenancy import member_organization, socket_membership
from core.errors import APIError, outage_error, outage_of, ws_message
from inference.chat.errors import invalid
from inference.web.saving import save_conversation
from inference.web.turn import Turn

log = logging.getLogger(__name__)
_turns: set[asyncio.Task] = set()  # keeps running turns referenced until they finish

NOT_SIGNED_IN = 4401
NOT_A_MEMBER = 4403
TRY_AGAIN_LATER = 1013  # the database or Redis is unreachable: the page may connect again in a few seconds


def _still_signed_in(session_key: str | None, user_pk) -> bool:
    """Whether the session the socket was opened with still signs this user in (not logged out, not expired,
    password unchanged): read again from the session store, as the next page load would."""
    if not session_key:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return auth.get_user(SimpleNamespace(session=session)).pk == user_pk


class PlaygroundConsumer(AsyncJsonWebsocketConsumer):
    # No channel layer: the socket hears from no other process, and a consumer that listens on one is closed as
    # soon as its Redis goes away.
    channel_layer_alias = None

    async def connect(self):
        self.organization = None
        self.turn: Turn | None = None
        self.task: asyncio.Task | None = None
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self._refuse(NOT_SIGNED_IN, "not_signed_in", "Sign in to use the playground.")
        try:
            membership = await database_sync_to_async(socket_membership)(self.scope)
        except Exception as exc:
            if outage_of(exc) is None:
                raise
            log.warning("playground socket refused: the %s is unreachable: %s", outage_of(exc), exc)
            await self.send_json(ws_message(outage_error(outage_of(exc))))
            return await self.close(code=TRY_AGAIN_LATER)
        if membership is None:
            return await self._refuse(NOT_A_MEMBER, "not_a_member",
                                      "You are not a member of any organization: create one to use the playground.")
        self.user, self.organization = user, membership.organization
        await self.send_json({"type": "ready", "organization": self.organization.name})

    async def _refuse(self, code: int, error_code: str, message: str) -> None:
        await self.send_json(ws_message(APIError(code - 4000, message, type="authentication_error", code=error_code)))
        self.organization = None
        await self.close(code=code, reason=message.encode()[:120].decode(errors="ignore"))  # 123 bytes at most

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        limit = settings.PLAYGROUND_WS_MAX_BYTES
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > limit:
            return await self._send_open(ws_message(APIError(
                413, f"This message takes {size} bytes; the playground reads messages of at most {limit} bytes "
                     f"(PLAYGROUND_WS_MAX_BYTES on this server). Shorten the conversation.",
                param="message", code="message_too_large")) | {"action": "message"})
        try:
            content = json.loads(text_data) if text_data is not None else None
        except ValueError:
            content = None
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            return await self._send_open(ws_message(invalid(
                "Each message must be a JSON object with a 'type': chat, stop or save.", "type", "invalid_message"))
                | {"action": "message"})
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        try:
            await self._receive(content)
        except Exception as exc:
            service = outage_of(exc)
            if service is None:  # a fault of the server's: said as such, and the page stays connected
                log.exception("playground %s failed", content["type"])
                error = APIError(500, "The server failed to do this. Please retry.", type="server_error",
                                 code="server_error")
            else:
                log.warning("playground %s refused: the %s is unreachable: %s", content["type"], service, exc)
                error = outage_error(service)
            # Nothing was started: a chat's page ends its turn with this error, a save names its action.
            message = ws_message(error)
            await self._send_open(message | {"action": "save"} if content["type"] == "save" else message)

    async def _receive(self, content: dict) -> None:
        if self.organization is None:
            return
        kind = content["type"]
        if kind == "stop":
            if self.turn is not None:
                self.turn.stop()
            return
        if kind not in ("chat", "save"):
            return await self._send_open(ws_message(invalid(
                f"Unknown message type '{kind}': use chat, stop or save.", "type", "invalid_message"))
                | {"action": "message"})
        if not await database_sync_to_async(_still_signed_in)(self.scope["session"].session_key, self.user.pk):
            return await self._refuse(NOT_SIGNED_IN, "signed_out", "You signed out: sign in again to use the playground.")
        organization = await database_sync_to_async(member_organization)(self.user, self.organization)
        if organization is None:
            return await self._refuse(NOT_A_MEMBER, "not_a_member",
                                      f"You are no longer a member of {self.organization.name}.")
        if kind == "save":
            return await self._save(organization, content)
        if self.task is not None and not self.task.done():
            return await self._send_open(ws_message(APIError(
                409, "An answer is still being generated: wait for it or stop it first.", code="turn_in_progress"))
                | {"action": "chat"})
        self.turn = Turn(organization, self._send_open)
        self.task = asyncio.create_task(self._run(self.turn, content))
        _turns.add(self.task)
        self.task.add_done_callback(_turns.discard)

    async def _run(self, turn: Turn, content: dict) -> None:
        try:
            await turn.run(content)
        except Exception as exc:
            service = outage_of(exc)
            if service is None:
                log.exception("playground turn %s failed", turn.request_id)
                error = APIError(500, "The turn failed on the server. Please retry.", type="server_error",
                                 code="server_error")
            else:  # before its generation started: nothing held is left but what the sweeper releases
                log.warning("playground turn %s refused: the %s is unreachable: %s", turn.request_id, service, exc)
                error = outage_error(service)
            turn.stop()
            await self._send_open(ws_message(error))

    async def _save(self, organization, content: dict) -> None:
        try:
            saved = await database_sync_to_async(save_conversation)(organization, content)
        except APIError as exc:
            return await self._send_open(ws_message(exc) | {"action": "save"})
        await self._send_open(saved)

    async def _send_open(self, message: dict) -> bool:
        """Send while the page is there; False once it has gone."""
        if self.organization is None:
            return False
        try:
            await self.send_json(message)
        except Exception:  # the connection is closing under us
            log.info("the playground page went away", exc_info=True)
            return False
        return True

    async def disconnect(self, code):
        self.organization = None  # nothing more is sent; a running turn stops and is charged what it generated
        if self.turn is not None:
            self.turn.stop()

