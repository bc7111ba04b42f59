"""A worker reports ready only once its model is loaded and warmed up: its metrics say 0 until then, and its first
heartbeat (what makes the API send it requests) comes after the engine has run its warm-up requests."""
import json
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.plugins.live_server import TINY_PRICE
from tests.poll import wait_until
from tests.workers.conftest import WORKER_START_TIMEOUT, WorkerPool

WARM = "tiny-warm"  # a model of its own: no request but the warm-up's ever reaches its worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float] | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.labels.get("model") == WARM}


@pytest.fixture
def pool(redis_url, tiny_model_path, tmp_path):
    models = tmp_path / "models.json"
    models.write_text(json.dumps({WARM: {"path": tiny_model_path, **TINY_PRICE}}))
    pool = WorkerPool(redis_url, str(models), tmp_path, model=WARM)
    yield pool
    pool.stop_all()


def test_the_first_heartbeat_follows_the_warm_up_and_the_metrics_say_ready_only_then(pool):
    port = _free_port()
    proc = pool.start("--metrics-port", str(port))
    seen_loading = []

    def beating():
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited with {proc.returncode}:\n{pool.log_of(proc)}")
        beat = proc.pid in pool.heartbeats()  # first: a heartbeat seen means ready was set before it
        metrics = scrape(port)
        if metrics is None:
            return None
        if metrics["inference_worker_ready"] == 0:
            assert not beat, "a heartbeat while the metrics said not ready"
            seen_loading.append(metrics)
        return beat and metrics

    metrics = wait_until(beating, timeout=WORKER_START_TIMEOUT, interval=0.05,
                         message=lambda: f"the worker to beat\n{pool.log_of(proc)}")
    assert seen_loading, "the metrics never showed the worker loading"
    assert "inference_worker_kv_cache_blocks" not in seen_loading[0]  # no engine yet
    assert metrics["inference_worker_ready"] == 1
    # Its two warm-up requests, 4 tokens each, ran before the first heartbeat: no API request reached it.
    assert metrics["inference_worker_generated_tokens_total"] == 8 and metrics["inference_worker_steps_total"] >= 4
    assert metrics["inference_worker_requests_in_flight"] == 0
    assert metrics["inference_worker_kv_cache_free_blocks"] == metrics["inference_worker_kv_cache_blocks"]
    assert "loaded tiny-warm in" in pool.log_of(proc) and "warm-up requests included" in pool.log_of(proc)
