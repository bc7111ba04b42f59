"""Log-in throttling under parallel attempts, through the live uvicorn server (real HTTP, threads): how many
passwords reach the hasher, the admin's log-in, the owner at another address, and memory under load."""
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.contrib.auth import hashers as django_hashers
from django.core.cache import cache

from accounts.hashers import Argon2PasswordHasher, BoundedHasher, hashing_slot
from accounts.models import User
from accounts.web import throttle

PASSWORD = "plum-harbour-9-lantern"
ATTACKER, OWNER = "203.0.113.7", "198.51.100.4"
LOGIN, ADMIN_LOGIN = "/accounts/login/", "/admin/login/"


class Counted(django_hashers.Argon2PasswordHasher):
    """Counts the passwords hashed and the most hashed at once."""

    lock = threading.Lock()
    calls = running = most_at_once = 0

    @classmethod
    def reset(cls):
        cls.calls = cls.running = cls.most_at_once = 0

    def _counted(self, work, *args):
        with Counted.lock:
            Counted.calls += 1
            Counted.running += 1
            Counted.most_at_once = max(Counted.most_at_once, Counted.running)
        try:
            return work(*args)
        finally:
            with Counted.lock:
                Counted.running -= 1

    def encode(self, password, salt):
        return self._counted(super().encode, password, salt)

    def verify(self, password, encoded):
        return self._counted(super().verify, password, encoded)


class CountingHasher(BoundedHasher, Counted):
    """The project's Argon2 hasher (same parameters, same slots), counted inside its slot."""

    time_cost = Argon2PasswordHasher.time_cost
    memory_cost = Argon2PasswordHasher.memory_cost
    parallelism = Argon2PasswordHasher.parallelism


@pytest.fixture(params=["locmem", "redis"])
def cache_backend(request, settings):
    """The embedded default's in-memory cache, or Redis (the scale-out cache)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/1"  # a database of its own
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    cache.clear()
    yield request.param
    cache.clear()


@pytest.fixture(autouse=True)
def counted_hashing(settings, transactional_db):
    settings.PASSWORD_HASHERS = ["tests.dashboard.test_login_throttle.CountingHasher"]
    settings.TRUSTED_PROXIES = 1  # one proxy: X-Forwarded-For gives each request its client address
    Counted.reset()
    cache.clear()
    yield Counted
    cache.clear()


@pytest.fixture
def alice():
    user = User.objects.create_user("alice@example.com", PASSWORD, is_staff=True, is_superuser=True)
    Counted.reset()
    return user


_start = threading.local()  # the barrier of in_parallel, in each of its threads


def post_form(base: str, path: str, address: str, username: str, password: str) -> httpx.Response:
    """One log-in as a browser at `address` sends it: the page's CSRF cookie and token, then the form (all
    the forms of in_parallel at once)."""
    with httpx.Client(base_url=base, timeout=120, trust_env=False, headers={"X-Forwarded-For": address}) as http:
        page = http.get(path)
        token = page.cookies["csrftoken"]
        data = {"username": username, "password": password, "csrfmiddlewaretoken": token}
        if getattr(_start, "barrier", None) is not None:
            _start.barrier.wait()
        return http.post(path, data=data)


def in_parallel(count: int, attempt) -> list[httpx.Response]:
    """attempt(i) for i in range(count) in threads of their own, their log-ins posted at once."""
    barrier = threading.Barrier(count)

    def run(i):
        _start.barrier = barrier
        try:
            return attempt(i)
        finally:
            _start.barrier = None

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def statuses(responses) -> dict[int, int]:
    found: dict[int, int] = {}
    for response in responses:
        found[response.status_code] = found.get(response.status_code, 0) + 1
    return found


def logs_in(base: str, path: str, address: str) -> bool:
    response = post_form(base, path, address, "alice@example.com", PASSWORD)
    return response.status_code == 302 and "sessionid" in response.cookies


def test_parallel_wrong_passwords_for_one_email_reach_the_hasher_at_most_five_times(
        live_server_url, cache_backend, alice):
    responses = in_parallel(30, lambda i: post_form(live_server_url, LOGIN, ATTACKER, "alice@example.com",
                                                    f"guess-{i}"))
    wrong = [r for r in responses if r.status_code == 200]
    assert all(b"do not match an account" in r.content for r in wrong)
    assert Counted.calls == len(wrong) <= throttle.PAIR_LIMIT
    refused = [r for r in responses if r.status_code == 429]
    assert len(wrong) + len(refused) == 30
    assert all(b"Too many failed log-in attempts" in r.content and int(r.headers["Retry-After"]) > 0
               for r in refused)
    assert post_form(live_server_url, LOGIN, ATTACKER, "alice@example.com", PASSWORD).status_code == 429
    assert logs_in(live_server_url, LOGIN, OWNER)  # the owner, at another address, gets in


def test_admin_login_is_throttled_like_the_dashboards(live_server_url, cache_backend, alice):
    responses = in_parallel(25, lambda i: post_form(live_server_url, ADMIN_LOGIN, ATTACKER, "alice@example.com",
                                                    f"guess-{i}"))
    assert Counted.calls == statuses(responses).get(200, 0) <= throttle.PAIR_LIMIT
    assert statuses(responses).get(429, 0) >= 25 - throttle.PAIR_LIMIT
    right = post_form(live_server_url, ADMIN_LOGIN, ATTACKER, "alice@example.com", PASSWORD)
    assert right.status_code == 429 and "sessionid" not in right.cookies
    assert b"Too many failed log-in attempts" in right.content
    assert logs_in(live_server_url, ADMIN_LOGIN, OWNER)


def test_a_login_that_finds_every_hashing_slot_busy_gets_429_and_does_not_count(
        live_server_url, cache_backend, alice, settings):
    settings.PASSWORD_HASH_CONCURRENCY, settings.PASSWORD_HASH_WAIT = 1, 0.2
    with hashing_slot():  # this thread holds the only slot
        busy = [post_form(live_server_url, LOGIN, OWNER, "alice@example.com", "guess") for _ in range(6)]
    assert statuses(busy) == {429: 6} and Counted.calls == 0
    assert all(b"checking many passwords" in r.content and r.headers["Retry-After"] == "1" for r in busy)
    assert logs_in(live_server_url, LOGIN, OWNER)  # six busy answers used none of the five tries


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1))


@pytest.fixture
def peak_memory():
    """The most this process (the live server's, and the clients') grew to since the fixture began, in MB."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets the peak (VmHWM) to the current size
    before = rss_kib("VmRSS")
    return lambda: (rss_kib("VmHWM") - before) / 1024


def test_200_parallel_logins_from_one_address_and_200_for_one_email(live_server_url, alice, peak_memory,
                                                                     capsys):
    from_one_address = in_parallel(200, lambda i: post_form(live_server_url, LOGIN, ATTACKER,
                                                            f"user{i}@example.com", f"guess-{i}"))
    evaluated_address = Counted.calls
    for_one_email = in_parallel(200, lambda i: post_form(live_server_url, LOGIN, "192.0.2.9", "alice@example.com",
                                                         f"guess-{i}"))
    evaluated_email = Counted.calls - evaluated_address
    grown = peak_memory()
    assert evaluated_address <= throttle.ADDRESS_LIMIT and evaluated_email <= throttle.PAIR_LIMIT
    assert set(statuses(from_one_address)) | set(statuses(for_one_email)) <= {200, 429}
    assert Counted.most_at_once <= 2  # PASSWORD_HASH_CONCURRENCY
    assert grown < 500
    assert logs_in(live_server_url, LOGIN, OWNER)
    with capsys.disabled():
        print(f"\n200 from one address: {evaluated_address} hashed {statuses(from_one_address)}; "
              f"200 for one email: {evaluated_email} hashed {statuses(for_one_email)}; "
              f"at most {Counted.most_at_once} at once; peak growth {grown:.0f} MB")


def test_200_parallel_logins_for_one_email_from_200_addresses_hash_two_at_a_time(
        live_server_url, alice, peak_memory, capsys):
    responses = in_parallel(200, lambda i: post_form(live_server_url, LOGIN, f"10.9.{i // 250}.{i % 250 + 1}",
                                                     "alice@example.com", f"guess-{i}"))
    grown, evaluated = peak_memory(), Counted.calls
    assert set(statuses(responses)) <= {200, 429} and evaluated == statuses(responses).get(200, 0)
    assert Counted.most_at_once <= 2
    assert grown < 500
    assert logs_in(live_server_url, LOGIN, OWNER)
    with capsys.disabled():
        print(f"\n200 for one email from 200 addresses: {evaluated} hashed {statuses(responses)}; "
              f"at most {Counted.most_at_once} at once; peak growth {grown:.0f} MB")
