"""A worker's --metrics-port: Prometheus reads the engine's and the queue's state from it."""
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import TINY_GREEDY
from tests.poll import wait_until
from tests.workers.conftest import WORKER_START_TIMEOUT, WorkerPool

HELLO = [{"role": "user", "content": "Hello there"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """{sample name: value} of the worker's metrics (one worker, so one sample per name)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.labels.get("model") == TINY_GREEDY}


@pytest.fixture
def metrics_worker(redis_url, models_file, tmp_path, queue):
    """A worker of its own model (no other worker serves it), with metrics on a free port."""
    pool = WorkerPool(redis_url, models_file, tmp_path, model=TINY_GREEDY)
    port = _free_port()
    proc = pool.start("--metrics-port", str(port), "--max-running", "4")
    wait_until(lambda: proc.pid in pool.heartbeats() or proc.poll() is not None, timeout=WORKER_START_TIMEOUT,
               message="the metrics worker to beat")
    assert proc.poll() is None, pool.log_of(proc)
    yield port
    pool.stop_all()


def test_metrics_count_what_the_worker_generated_and_show_its_cache(client, alice, metrics_worker):
    before = scrape(metrics_worker)
    assert before["inference_worker_max_running"] == 4 and before["inference_worker_draining"] == 0
    assert before["inference_worker_kv_cache_blocks"] > 0
    assert before["inference_worker_kv_cache_free_blocks"] == before["inference_worker_kv_cache_blocks"]
    assert before["inference_queue_waiting_requests"] == 0

    tokens = 0
    for _ in range(2):  # the same prompt twice: the second finds it in the prefix cache
        answer = client.chat.completions.create(model=TINY_GREEDY, messages=HELLO * 20, max_tokens=6)
        tokens += answer.usage.completion_tokens
    after = scrape(metrics_worker)
    assert after["inference_worker_generated_tokens_total"] - before["inference_worker_generated_tokens_total"] \
        == tokens
    assert after["inference_worker_steps_total"] > before["inference_worker_steps_total"]
    assert after["inference_worker_prefix_cache_hit_tokens_total"] > 0
    assert after["inference_worker_prefix_cache_queried_tokens_total"] >= 2 * answer.usage.prompt_tokens
    assert after["inference_worker_requests_in_flight"] == 0 and after["inference_worker_running_sequences"] == 0
    assert after["inference_worker_preemptions_total"] == 0
