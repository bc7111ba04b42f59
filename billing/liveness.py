"""Heartbeats of requests that hold credit, so the sweeper can tell a long request from a dead one.

The process that runs a request's generation writes its token counts to the cache every
HEARTBEAT_S while it runs. A hold whose heartbeat has lapsed belongs to a request that died with
its process: the sweeper charges the tokens of its last heartbeat (the prompt is on us, as for any
failed request) and frees the rest. With Redis the cache is shared by every process; in the
embedded default the sweeper runs inside the one process that holds the heartbeats.
"""
from django.conf import settings
from django.core.cache import cache

HEARTBEAT_S = 10


def _key(request_id: str) -> str:
    return f"billing:alive:{request_id}"


def beat(request_id: str, *, prompt_tokens: int, completion_tokens: int) -> None:
    timeout = max(settings.HOLD_STALE_AFTER_S, 3 * HEARTBEAT_S)
    cache.set(_key(request_id), {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}, timeout)


def last_beat(request_id: str) -> dict | None:
    return cache.get(_key(request_id))


def forget(request_id: str) -> None:
    cache.delete(_key(request_id))
