"""manage.py inference_status: what an operator sees of the workers and the queues."""
import json
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from inference.queue import protocol
from tests.api.conftest import TINY


def status(*args) -> str:
    out = StringIO()
    call_command("inference_status", *args, stdout=out)
    return out.getvalue()


def test_it_lists_the_live_workers_of_a_model(workers, worker_pool):
    shown = json.loads(status("--model", TINY, "--json"))
    assert len(shown) == 1 and shown[0]["model"] == TINY
    pids = {w["pid"] for w in shown[0]["workers"]}
    assert pids == {proc.pid for proc in workers}
    assert shown[0]["accepting"] == 2 and all(w["device"] == "cpu" for w in shown[0]["workers"])
    text = status("--model", TINY)
    assert f"{TINY}: 2 live worker(s), 2 accepting; 0 request(s) waiting" in text
    for proc in workers:
        assert f"pid {proc.pid}" in text
    assert text.count("window 2048 tokens") == 2  # the tiny model's own context window


def test_it_counts_waiting_requests_and_the_oldest_ones_wait(queue, rds):
    ghost = "no-worker-serves-this"
    key = protocol.requests_key(ghost)
    rds.delete(key)
    try:
        rds.xadd(key, {"request": "{}"})
        time.sleep(1.1)
        rds.xadd(key, {"request": "{}"})
        shown = json.loads(status("--model", ghost, "--json"))[0]
        assert shown["waiting"] == 2 and shown["workers"] == [] and shown["oldest_wait_s"] >= 1.0
        assert "2 request(s) waiting, the oldest for" in status("--model", ghost)
    finally:
        rds.delete(key)


def test_without_a_queue_it_says_why(settings):
    settings.INFERENCE_QUEUE_URL = None
    with pytest.raises(CommandError, match="INFERENCE_QUEUE_URL is not set"):
        status()


def test_an_unreachable_redis_is_a_clear_error(settings):
    settings.INFERENCE_QUEUE_URL = "redis://127.0.0.1:1/0"
    with pytest.raises(CommandError, match="cannot be read"):
        status("--model", TINY)
