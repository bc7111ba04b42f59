"""Waiting for something another thread or process does: one poll-until loop for the whole suite.

No Django here: the engine's tests import it on hosts without it (bench/gpu.sh).
"""
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float = 30, interval: float = 0.05,
               message: str | Callable[[], str] = "the condition") -> T:
    """Call predicate() every `interval` seconds until it returns something truthy; return that.

    Past `timeout` seconds an AssertionError says what was awaited (`message`, or message() for a text made
    at that moment, e.g. with a log's tail). predicate() may raise to stop the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {_text(message)}")
        time.sleep(interval)


def _text(message: str | Callable[[], str]) -> str:
    return message() if callable(message) else message
