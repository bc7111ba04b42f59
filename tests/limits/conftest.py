"""Both counter backends (this process's memory, the run's redis-server), a clock the tests move, and the live
API (tests/plugins/live_server.py) with the OpenAI SDK as `client`."""
import math
import time

import pytest

from core import clock as limits_clock
from core.counters import get_counters


@pytest.fixture
def client(openai_client):
    """The OpenAI SDK on the live server (Django's test client keeps the name `client` outside these folders)."""
    return openai_client


@pytest.fixture(params=["memory", "redis"])
def counters(request, settings):
    """The counters the platform uses: in-process (no REDIS_URL), or Redis (REDIS_URL set), emptied."""
    settings.REDIS_URL = request.getfixturevalue("redis_url") if request.param == "redis" else None
    counters = get_counters()
    counters.clear()
    yield counters
    counters.clear()


@pytest.fixture
def clock():
    """Frozen one second into the current minute (so 59 s are left of its window) until the test ends."""
    limits_clock.freeze(math.floor(time.time() / 60) * 60 + 1)
    yield limits_clock
    limits_clock.thaw()
