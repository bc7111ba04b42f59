"""Requests and tokens per minute, per API key and per organization, in fixed one-minute windows.

A request counts against up to four limits (the key's own rpm and tpm where it has them, its
organization's always), in two steps: the request itself as soon as its key is known, before any
work is done on its body, and then, once it is tokenized, its tokens: its prompt plus the most it
may generate (max_tokens × n). Each step takes from all the limits of its kind or from none. Once
the request is settled the tokens counters are corrected to what it really used, if the window it
was admitted in is still the current one. The x-ratelimit headers report, for requests and for tokens, the most
restrictive of the limits that apply.
"""
import math
from dataclasses import dataclass

from django.conf import settings

from core import clock
from core.counters import Charge, get_counters

WINDOW_S = 60
REQUESTS, TOKENS = "requests", "tokens"


@dataclass(frozen=True)
class Limit:
    scope: str  # "API key" or "organization"
    kind: str  # REQUESTS or TOKENS
    value: int
    counter: str


@dataclass(frozen=True)
class Snapshot:
    """(limit, remaining) of the most restrictive limit of each kind, and the seconds to the next window."""

    requests: tuple[int, int]
    tokens: tuple[int, int]
    reset_s: float

    @property
    def retry_after_s(self) -> int:
        return max(math.ceil(self.reset_s), 1)

    def headers(self) -> dict[str, str]:
        reset = duration(self.reset_s)
        return {
            "x-ratelimit-limit-requests": str(self.requests[0]),
            "x-ratelimit-remaining-requests": str(self.requests[1]),
            "x-ratelimit-reset-requests": reset,
            "x-ratelimit-limit-tokens": str(self.tokens[0]),
            "x-ratelimit-remaining-tokens": str(self.tokens[1]),
            "x-ratelimit-reset-tokens": reset,
        }


@dataclass(frozen=True)
class Admission:
    limits: list[Limit]
    window: int
    tokens: int
    snapshot: Snapshot


class RateLimited(Exception):
    def __init__(self, *, limit: Limit, used: int, requested: int, snapshot: Snapshot):
        self.limit, self.used, self.requested, self.snapshot = limit, used, requested, snapshot
        super().__init__(f"{limit.scope} {limit.kind} per minute: limit {limit.value}, used {used}, "
                         f"requested {requested}")


def duration(seconds: float) -> str:
    """OpenAI's form of a reset time, in whole seconds rounded up: "17s", "1m0s"."""
    whole = max(math.ceil(seconds), 0)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def limits_of(key) -> list[Limit]:
    """The limits a request with this key counts against (the key's own are optional)."""
    org = key.organization
    found = []
    if key.rate_limit_rpm is not None:
        found.append(Limit("API key", REQUESTS, key.rate_limit_rpm, f"key:{key.pk}:{REQUESTS}"))
    if key.rate_limit_tpm is not None:
        found.append(Limit("API key", TOKENS, key.rate_limit_tpm, f"key:{key.pk}:{TOKENS}"))
    org_rpm = org.rate_limit_rpm if org.rate_limit_rpm is not None else settings.ORG_RATE_LIMIT_RPM
    org_tpm = org.rate_limit_tpm if org.rate_limit_tpm is not None else settings.ORG_RATE_LIMIT_TPM
    found.append(Limit("organization", REQUESTS, org_rpm, f"org:{org.pk}:{REQUESTS}"))
    found.append(Limit("organization", TOKENS, org_tpm, f"org:{org.pk}:{TOKENS}"))
    return found


def _window() -> tuple[int, float]:
    now = clock.now()
    window = int(now // WINDOW_S)
    return window, (window + 1) * WINDOW_S - now


def _tightest(limits: list[Limit], values: list[int], kind: str) -> tuple[int, int]:
    pairs = [(lim.value, max(lim.value - value, 0)) for lim, value in zip(limits, values) if lim.kind == kind]
    return min(pairs, key=lambda pair: (pair[1], pair[0]))


def _snapshot(limits: list[Limit], values: list[int], reset_s: float) -> Snapshot:
    return Snapshot(_tightest(limits, values, REQUESTS), _tightest(limits, values, TOKENS), reset_s)


def admit(key, *, requests: int = 1, tokens: int = 0) -> Admission:
    """Take `requests` requests and `tokens` tokens from every limit of the key, or raise RateLimited and take
    nothing. The limits of a kind it takes none of are read in the same step, for the snapshot."""
    limits = limits_of(key)
    window, reset_s = _window()
    charges = [Charge(lim.counter, requests if lim.kind == REQUESTS else tokens, lim.value) for lim in limits]
    taken = get_counters().take(charges, window)
    snapshot = _snapshot(limits, taken.values, reset_s)
    if taken.refused is not None:
        refused = charges[taken.refused]
        raise RateLimited(limit=limits[taken.refused], used=taken.values[taken.refused], requested=refused.amount,
                          snapshot=snapshot)
    return Admission(limits, window, tokens, snapshot)


def peek(key) -> Snapshot:
    """Where the key stands now, taking nothing."""
    limits = limits_of(key)
    window, reset_s = _window()
    return _snapshot(limits, get_counters().values([lim.counter for lim in limits], window), reset_s)


def correct(admission: Admission, *, used_tokens: int) -> bool:
    """Replace the tokens an admitted request reserved by those it used; False once its window has passed."""
    window, _ = _window()
    delta = used_tokens - admission.tokens
    if window != admission.window or not delta:
        return False
    counters = get_counters()
    for lim in admission.limits:
        if lim.kind == TOKENS:
            counters.add(lim.counter, window, delta)
    return True
