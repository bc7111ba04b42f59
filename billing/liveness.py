"""Heartbeats of requests that hold credit, so the sweeper can tell a long request from a dead one.

The process that runs a request's generation writes its token counts to the cache every
HEARTBEAT_S while it runs: an "alive" entry that lapses after HOLD_STALE_AFTER_S, and the counts,
kept for a day. A hold older than that whose alive entry has lapsed belongs to a request that died
with its process: the sweeper charges the tokens of its last heartbeat (the prompt is on us, as for
any failed request) and frees the rest, or frees it all when no heartbeat was ever written. With
Redis the cache is shared by every process; in the embedded default the sweeper runs inside the one
process that holds the heartbeats.
"""
from django.conf import settings
from django.core.cache import cache

HEARTBEAT_S = 10
PROGRESS_TTL_S = 24 * 3600


def _alive_key(request_id: str) -> str:
    return f"billing:alive:{request_id}"


def _progress_key(request_id: str) -> str:
    return f"billing:progress:{request_id}"


def beat(request_id: str, *, prompt_tokens: int, completion_tokens: int) -> None:
    counts = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    cache.set_many({_alive_key(request_id): 1, _progress_key(request_id): counts},
                   timeout=max(settings.HOLD_STALE_AFTER_S, 3 * HEARTBEAT_S))
    cache.touch(_progress_key(request_id), PROGRESS_TTL_S)


def is_alive(request_id: str) -> bool:
    return cache.get(_alive_key(request_id)) is not None


def last_counts(request_id: str) -> dict | None:
    """The token counts of the request's last heartbeat, if it ever sent one."""
    return cache.get(_progress_key(request_id))


def forget(request_id: str) -> None:
    cache.delete_many([_alive_key(request_id), _progress_key(request_id)])
