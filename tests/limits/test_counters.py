"""The window counters, the same tests on both backends: all or nothing, windows, corrections, atomicity."""
import threading

import pytest

from core.counters import Charge, CountersUnavailable, LocalCounters, RedisCounters

W = 29_000_000  # a window number (minutes since the epoch)


def test_a_take_adds_to_every_counter_up_to_the_limits(counters):
    taken = counters.take([Charge("a", 1, 3), Charge("b", 40, 100)], W)
    assert taken.refused is None and taken.values == [1, 40]
    taken = counters.take([Charge("a", 1, 3), Charge("b", 60, 100)], W)
    assert taken.refused is None and taken.values == [2, 100]  # exactly at the limit is allowed
    assert counters.values(["a", "b", "unknown"], W) == [2, 100, 0]


def test_a_refused_take_adds_to_no_counter(counters):
    counters.take([Charge("a", 1, 3), Charge("b", 90, 100)], W)
    taken = counters.take([Charge("a", 1, 3), Charge("b", 11, 100)], W)
    assert taken.refused == 1 and taken.values == [1, 90]
    assert counters.values(["a", "b"], W) == [1, 90]  # "a" was within its limit, yet did not count
    taken = counters.take([Charge("a", 3, 3), Charge("b", 1, 100)], W)
    assert taken.refused == 0 and counters.values(["a", "b"], W) == [1, 90]


def test_a_request_larger_than_the_limit_is_refused_even_in_an_empty_window(counters):
    taken = counters.take([Charge("t", 101, 100)], W)
    assert taken.refused == 0 and counters.values(["t"], W) == [0]


def test_each_window_counts_from_zero(counters):
    for _ in range(2):
        assert counters.take([Charge("a", 1, 2)], W).refused is None
    assert counters.take([Charge("a", 1, 2)], W).refused == 0
    assert counters.take([Charge("a", 1, 2)], W + 1).values == [1]
    assert counters.values(["a"], W + 1) == [1]


def test_a_correction_changes_only_a_counter_of_a_live_window_and_never_below_zero(counters):
    counters.take([Charge("t", 50, 100)], W)
    counters.add("t", W, -30)
    assert counters.values(["t"], W) == [20]
    counters.add("t", W, -500)
    assert counters.values(["t"], W) == [0]
    counters.add("t", W, 7)
    assert counters.values(["t"], W) == [7]
    counters.add("never-taken", W, -5)
    counters.add("never-taken", W, 5)
    assert counters.values(["never-taken"], W) == [0]  # nothing to correct: no counter is made up


def test_counters_of_past_windows_are_dropped():
    local = LocalCounters()
    local.take([Charge("a", 1, 5)], W)
    local.take([Charge("a", 1, 5)], W + 1)
    assert list(local._counts) == [("a", W + 1)]


def test_redis_counters_expire(redis_url):
    counters = RedisCounters(redis_url, ttl_s=120, prefix="ratelimit-expiry")
    counters.take([Charge("a", 1, 5), Charge("b", 1, 5)], W)
    keys = sorted(k.decode() for k in counters.redis.keys("ratelimit-expiry:*"))
    assert keys == [f"ratelimit-expiry:a:{W}", f"ratelimit-expiry:b:{W}"]
    assert all(0 < counters.redis.ttl(key) <= 120 for key in keys)
    counters.clear()


def test_concurrent_takes_from_two_processes_never_pass_the_limit(redis_url):
    # Two clients stand for two API processes sharing one Redis.
    sides = [RedisCounters(redis_url, prefix="ratelimit-race") for _ in range(2)]
    sides[0].clear()
    barrier = threading.Barrier(16, timeout=30)
    outcomes = []

    def attempt(i):
        barrier.wait()
        outcomes.append(sides[i % 2].take([Charge("org", 1, 100), Charge("tokens", 10, 55)], W).refused)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 16  # every attempt finished (a thread's failure shows here)
    assert outcomes.count(None) == 5
    assert sides[0].values(["org", "tokens"], W) == [5, 50]
    sides[0].clear()


def test_an_unreachable_redis_is_reported_as_unavailable():
    counters = RedisCounters("redis://127.0.0.1:1/0")
    with pytest.raises(CountersUnavailable):
        counters.take([Charge("a", 1, 5)], W)
    with pytest.raises(CountersUnavailable):
        counters.values(["a"], W)
