"""Both counter backends (this process's memory, a real Redis), a clock the tests move, and the live API."""
import math
import time

import pytest

from core import clock as limits_clock
from core.counters import get_counters
from tests.api.conftest import (  # noqa: F401  (fixtures, shared with the API tests)
    alice,
    alice_secret,
    base_url,
    client,
    http,
    models_file,
    server,
)
from tests.workers.conftest import redis_url  # noqa: F401  (a redis-server of this test session)


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
