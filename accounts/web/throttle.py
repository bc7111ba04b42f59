"""Log-in throttling: attempts counted per (email, client address) and per client address, before any password
is checked.

`admit` counts an attempt with one atomic increment of each of its counters in Django's cache (`add`, then
`incr`: atomic in the in-memory default and in Redis, shared by every process) and refuses it once a counter
is past its limit, so of any number of parallel attempts at most the limit reach the password hasher. The
attempt then reports how it ended: a failure keeps its count, a success gives it back (and clears its
email's counter at that address), an attempt that was never evaluated gives it back.

The failure that fills a counter locks it: for LOCK seconds, twice as long for each lock that follows within
DECAY of the one before, up to MAX_LOCK. A filled counter that is not locked yet (its last attempt is still
being checked) refuses too. Counts of failures that did not fill a counter are forgotten WINDOW seconds
after the first. Nothing counts per email alone: failures from other addresses never lock an email's owner
out, and a password reset forgets the email's counters at every address.
"""
import hashlib
import ipaddress
import json
import math
import secrets
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

WINDOW = 15 * 60  # seconds
LOCK = 15 * 60
MAX_LOCK = 24 * 60 * 60
DECAY = 24 * 60 * 60
PAIR_LIMIT = 5  # failures for one email from one address
ADDRESS_LIMIT = 20  # failures from one address (an IPv6 /64), whatever the emails


def now() -> float:
    """The clock the locks read (replaced in tests)."""
    return time.time()


def _digest(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def network(address: str) -> str:
    """The address an attempt counts against: IPv4 as is, IPv6 by its /64 (one host's usual allocation)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6:
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _generation_key(email: str) -> str:
    return f"login:generation:{_digest(email)}"


@dataclass(frozen=True)
class Counter:
    name: str
    limit: int
    clears_on_success: bool

    @property
    def lock_key(self) -> str:
        return f"{self.name}:lock"


def counters(email: str, address: str | None) -> list[Counter]:
    email = email.strip().lower()
    generation = cache.get(_generation_key(email), "")
    pair = Counter(f"login:pair:{_digest(generation, email, address or '')}", PAIR_LIMIT, True)
    if not address:
        return [pair]
    return [Counter(f"login:address:{_digest(network(address))}", ADDRESS_LIMIT, False), pair]


def _take(key: str) -> int:
    while True:
        cache.add(key, 0, timeout=WINDOW)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            continue
        if count == 1:  # Redis' incr recreates a key that expired after add without an expiry: set it again
            cache.touch(key, WINDOW)
        return count


def _give_back(key: str) -> None:
    try:
        if cache.decr(key) < 0:  # the key had expired and Redis recreated it without an expiry
            cache.delete(key)
    except ValueError:  # expired: nothing left to give back
        pass


@dataclass
class Taken:
    counter: Counter
    key: str
    count: int
    strikes: int


@dataclass
class Attempt:
    """One log-in attempt: refused (retry_at says when to try again), or admitted and then reported."""

    at: float
    retry_at: float | None = None
    taken: list[Taken] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return self.retry_at is not None

    def failed(self) -> None:
        for taken in self.taken:
            if taken.count >= taken.counter.limit:
                _lock(taken, self.at)

    def succeeded(self) -> None:
        for taken in self.taken:
            if taken.counter.clears_on_success:  # a new epoch: no strikes, counting from zero
                cache.set(taken.counter.lock_key, {"strikes": 0, "until": 0, "epoch": secrets.token_hex(8)},
                          timeout=2 * WINDOW)
            else:
                _give_back(taken.key)

    def cancelled(self) -> None:
        for taken in self.taken:
            _give_back(taken.key)


def _lock_for(strikes: int) -> int:
    return min(LOCK * 2 ** min(strikes, 16), MAX_LOCK)


def _lock(taken: Taken, at: float) -> None:
    until = at + _lock_for(taken.strikes)
    lock = {"strikes": taken.strikes + 1, "until": until, "epoch": secrets.token_hex(8)}
    cache.set(taken.counter.lock_key, lock, timeout=math.ceil(until - at + DECAY))


def admit(email: str, address: str | None) -> Attempt:
    """Counts an attempt at email from address, or refuses it (without counting) while a counter is full."""
    at = now()
    found = counters(email, address)
    locks = cache.get_many([counter.lock_key for counter in found])
    locked_until = [lock["until"] for lock in locks.values() if lock["until"] > at]
    if locked_until:
        return Attempt(at, retry_at=max(locked_until))
    attempt = Attempt(at)
    for counter in found:
        lock = locks.get(counter.lock_key)
        strikes = lock["strikes"] if lock and at - lock["until"] < DECAY else 0
        # Each lock (and each success that clears) starts a new epoch, whose attempts count from zero.
        key = f"{counter.name}:count:{lock['epoch'] if lock else ''}"
        attempt.taken.append(Taken(counter, key, _take(key), strikes))
        if attempt.taken[-1].count > counter.limit:
            attempt.cancelled()
            return Attempt(at, retry_at=at + _lock_for(strikes))
    return attempt


def clear_email(email: str) -> None:
    """Forgets the email's failures and locks at every address (its password changed)."""
    cache.set(_generation_key(email.strip().lower()), secrets.token_hex(8), timeout=3 * DECAY)


def client_ip(request) -> str | None:
    """The client's address: REMOTE_ADDR, or behind TRUSTED_PROXIES proxies the address the outermost
    trusted proxy saw (X-Forwarded-For entries further left are the client's to forge)."""
    proxies = settings.TRUSTED_PROXIES
    if proxies:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR") or None
