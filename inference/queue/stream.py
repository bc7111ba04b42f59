"""Reading one request's event stream (protocol.events_key) as the API process follows it.

Its entry ids are 0-1 ("claimed"), 0-2, 0-3... (the worker's events, in order): an id that does not follow the last
one read means Redis lost the entries between (it restarted without them), and reading stops there.
"""
from __future__ import annotations

from inference.engine.types import TokenEvent
from inference.queue import protocol as p


class UnreadableEvent(Exception):
    """An entry of the stream that is not an event this version of the protocol reads."""


class Followed:
    """What has been read of one request's event stream: the last entry id, the worker that claimed it, the
    completion tokens counted so far, and `gap` once entries are found lost."""

    def __init__(self):
        self.last_id = "0-0"
        self.worker: str | None = None
        self.completion_tokens = 0
        self.gap: tuple[str, str] | None = None  # (the first entry lost, the entry read after those lost)

    def absorb(self, reply) -> list[TokenEvent]:
        events = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                expected = next_id(self.last_id)
                if entry_id != expected:
                    self.gap = (expected, entry_id)
                    return events
                self.last_id = entry_id
                kind = fields.get("kind")
                if kind == p.KIND_CLAIMED:
                    self.worker = fields.get("worker")
                elif kind == p.KIND_EVENT:
                    try:
                        event = p.decode_event(fields["event"])
                    except (KeyError, TypeError, ValueError) as exc:
                        raise UnreadableEvent(f"{entry_id}: {exc!r}") from exc
                    self.completion_tokens = event.completion_tokens
                    events.append(event)
        return events


def next_id(entry_id: str) -> str:
    """The entry id that follows `entry_id` in a stream whose ids the writer sets itself (0-1, 0-2...)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq) + 1}"
