"""Password hashing a small server survives: Argon2id at a modest memory cost, and a bound on how many hashes
this process runs at once.

Django's default Argon2 parameters take 100 MiB and 8 lanes per hash, so forty parallel log-ins took about
4 GB. These take 19 MiB, 2 passes, 1 lane (OWASP's recommended minimum for Argon2id). Hashes stored with
other parameters still verify (Argon2 reads them from the hash) and are re-hashed with these at the owner's
next log-in; the older PBKDF2 and scrypt hashes verify too, through the same bound.

Every hash (a log-in's check, the stand-in hash Django computes for an unknown email, a new password) takes
one of PASSWORD_HASH_CONCURRENCY slots; a request that waits PASSWORD_HASH_WAIT seconds without one gets
HashingBusy, which the views that hash answer with a 429 (accounts.web.auth.throttled).
"""
import threading
from contextlib import contextmanager

from django.conf import settings
from django.contrib.auth import hashers


class HashingBusy(Exception):
    """Every hashing slot of this process stayed taken for PASSWORD_HASH_WAIT seconds."""


_slots_lock = threading.Lock()
_slots: tuple[int, threading.BoundedSemaphore] | None = None
_held = threading.local()


def _semaphore() -> threading.BoundedSemaphore:
    global _slots
    size = settings.PASSWORD_HASH_CONCURRENCY
    with _slots_lock:
        if _slots is None or _slots[0] != size:
            _slots = (size, threading.BoundedSemaphore(size))
        return _slots[1]


@contextmanager
def hashing_slot():
    """Holds one of the process's hashing slots (a thread that already holds one takes no second)."""
    if getattr(_held, "slot", False):
        yield
        return
    slots = _semaphore()
    if not slots.acquire(timeout=settings.PASSWORD_HASH_WAIT):
        raise HashingBusy()
    _held.slot = True
    try:
        yield
    finally:
        _held.slot = False
        slots.release()


class BoundedHasher:
    """Runs the hasher's work inside a hashing slot."""

    def encode(self, password, salt, *args, **kwargs):
        with hashing_slot():
            return super().encode(password, salt, *args, **kwargs)

    def verify(self, password, encoded):
        with hashing_slot():
            return super().verify(password, encoded)

    def harden_runtime(self, password, encoded):
        with hashing_slot():
            return super().harden_runtime(password, encoded)


class Argon2PasswordHasher(BoundedHasher, hashers.Argon2PasswordHasher):
    time_cost = 2
    memory_cost = 19 * 1024  # KiB
    parallelism = 1


class PBKDF2PasswordHasher(BoundedHasher, hashers.PBKDF2PasswordHasher):
    pass


class PBKDF2SHA1PasswordHasher(BoundedHasher, hashers.PBKDF2SHA1PasswordHasher):
    pass


class ScryptPasswordHasher(BoundedHasher, hashers.ScryptPasswordHasher):
    pass
