"""Counters of fixed windows behind one interface: in this process, or in Redis shared by every process.

A counter is named by what it counts ("key:7:tokens") and the window it counts in. `take` is the
admission: all or nothing across several counters, so a refused request consumes nothing; a charge of
0 only reads its counter, in the same step, and is never refused. `add`
corrects a counter afterwards, only while its window still exists, and never below zero.

The embedded default keeps counters in process memory (there is one API process); with REDIS_URL
set every API process shares them in Redis, checked and added by one Lua script so two processes
can never both take the last unit, and each key expires once its window has passed.
"""
import threading
from dataclasses import dataclass

import redis
from django.conf import settings

PREFIX = "ratelimit"


class CountersUnavailable(Exception):
    """The shared counters cannot be reached (Redis is down)."""


@dataclass(frozen=True)
class Charge:
    name: str
    amount: int
    limit: int


@dataclass(frozen=True)
class Taken:
    """The counters' values after a take; refused is the index of the first charge over its limit."""

    values: list[int]
    refused: int | None = None


class LocalCounters:
    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}
        self._window: int | None = None

    def _expire(self, window: int) -> None:
        if window != self._window:
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            self._window = window

    def take(self, charges: list[Charge], window: int) -> Taken:
        with self._lock:
            self._expire(window)
            values = [self._counts.get((c.name, window), 0) for c in charges]
            for i, (charge, value) in enumerate(zip(charges, values)):
                if charge.amount and value + charge.amount > charge.limit:
                    return Taken(values, refused=i)
            for charge in charges:
                self._counts[(charge.name, window)] = self._counts.get((charge.name, window), 0) + charge.amount
            return Taken([self._counts[(c.name, window)] for c in charges])

    def values(self, names: list[str], window: int) -> list[int]:
        with self._lock:
            self._expire(window)
            return [self._counts.get((name, window), 0) for name in names]

    def add(self, name: str, window: int, amount: int) -> None:
        with self._lock:
            self._expire(window)
            if (name, window) in self._counts:
                self._counts[(name, window)] = max(self._counts[(name, window)] + amount, 0)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


# KEYS: the counters. ARGV: the seconds they live, then amount and limit of each counter.
# Returns the index (1-based) of the first counter over its limit (0: taken), then every value.
# An amount of 0 only reads its counter.
_TAKE = """
local values = {}
for i = 1, #KEYS do values[i] = tonumber(redis.call('GET', KEYS[i]) or '0') end
for i = 1, #KEYS do
  local amount = tonumber(ARGV[2 * i])
  if amount > 0 and values[i] + amount > tonumber(ARGV[2 * i + 1]) then return {i, unpack(values)} end
end
for i = 1, #KEYS do
  values[i] = redis.call('INCRBY', KEYS[i], ARGV[2 * i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return {0, unpack(values)}
"""

_ADD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value < 0 then value = redis.call('INCRBY', KEYS[1], -value) end
return value
"""


class RedisCounters:
    def __init__(self, url: str, *, ttl_s: int = 120, prefix: str = PREFIX):
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._take = self.redis.register_script(_TAKE)
        self._add = self.redis.register_script(_ADD)

    def _key(self, name: str, window: int) -> str:
        return f"{self.prefix}:{name}:{window}"

    def take(self, charges: list[Charge], window: int) -> Taken:
        args = [self.ttl_s]
        for charge in charges:
            args += [charge.amount, charge.limit]
        try:
            refused, *values = self._take(keys=[self._key(c.name, window) for c in charges], args=args)
        except redis.RedisError as exc:
            raise CountersUnavailable(str(exc)) from exc
        return Taken([int(v) for v in values], refused=int(refused) - 1 if refused else None)

    def values(self, names: list[str], window: int) -> list[int]:
        try:
            raw = self.redis.mget([self._key(name, window) for name in names])
        except redis.RedisError as exc:
            raise CountersUnavailable(str(exc)) from exc
        return [int(v) if v is not None else 0 for v in raw]

    def add(self, name: str, window: int, amount: int) -> None:
        try:
            self._add(keys=[self._key(name, window)], args=[amount])
        except redis.RedisError as exc:
            raise CountersUnavailable(str(exc)) from exc

    def clear(self) -> None:
        for key in self.redis.scan_iter(f"{self.prefix}:*"):
            self.redis.delete(key)


_local = LocalCounters()
_shared: dict[str, RedisCounters] = {}
_shared_lock = threading.Lock()


def get_counters() -> LocalCounters | RedisCounters:
    """Redis counters when REDIS_URL is set, else this process's own."""
    url = settings.REDIS_URL
    if not url:
        return _local
    with _shared_lock:
        if url not in _shared:
            _shared[url] = RedisCounters(url)
        return _shared[url]
