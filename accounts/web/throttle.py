"""Log-in throttling: failed attempts counted per email and per client IP in Django's cache.

Each counter keeps the times of its recent failures. Once an email has `EMAIL_LIMIT` failures (or an
IP `IP_LIMIT`) inside `WINDOW`, every attempt is refused, right password or not, until the oldest of
those failures is `WINDOW` old. Refused attempts are not counted, so the wait never grows. A
successful log-in clears the email's counter; the IP's counter only ages out.
"""
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from django.conf import settings
from django.core.cache import cache

WINDOW = 15 * 60  # seconds
EMAIL_LIMIT = 5
IP_LIMIT = 20


def now() -> float:
    """The clock the throttle reads (replaced in tests)."""
    return time.time()


@dataclass(frozen=True)
class Counter:
    kind: str  # "email" or "ip"
    value: str
    limit: int

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.value.encode()).hexdigest()
        return f"login-failures:{self.kind}:{digest}"

    def recent(self, at: float) -> list[float]:
        return [t for t in cache.get(self.key, []) if at - t < WINDOW]


def counters(email: str, ip: str | None) -> list[Counter]:
    found = [Counter("email", email.strip().lower(), EMAIL_LIMIT)] if email.strip() else []
    if ip:
        found.append(Counter("ip", ip, IP_LIMIT))
    return found


def blocked_until(email: str, ip: str | None) -> datetime | None:
    """When attempts for this email and IP are allowed again; None when they are allowed now."""
    at = now()
    retry = None
    for counter in counters(email, ip):
        failures = counter.recent(at)
        if len(failures) >= counter.limit:
            free_at = failures[-counter.limit] + WINDOW
            retry = free_at if retry is None else max(retry, free_at)
    return None if retry is None else datetime.fromtimestamp(retry, tz=timezone.utc)


def record_failure(email: str, ip: str | None) -> None:
    at = now()
    for counter in counters(email, ip):
        failures = (counter.recent(at) + [at])[-counter.limit:]
        cache.set(counter.key, failures, timeout=WINDOW)


def clear_email(email: str) -> None:
    for counter in counters(email, None):
        cache.delete(counter.key)


def client_ip(request) -> str | None:
    """The client's address: REMOTE_ADDR, or behind TRUSTED_PROXIES proxies the address the outermost
    trusted proxy saw (X-Forwarded-For entries further left are the client's to forge)."""
    proxies = settings.TRUSTED_PROXIES
    if proxies:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR") or None
