"""/livez answers whatever the dependencies do; /readyz says which of them keeps the process from serving."""
import signal

import pytest
from django.db import OperationalError

from tests.api.conftest import TINY
from tests.poll import wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def web():
    from django.test import Client

    return Client()


class _DownDatabase:
    def cursor(self):
        raise OperationalError("connection refused")


def test_livez_answers_while_the_database_is_down_and_readyz_names_it(web, monkeypatch):
    import config.probes

    monkeypatch.setattr(config.probes, "connection", _DownDatabase())
    live = web.get("/livez")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = web.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["database"] and ready.json()["checks"]["database"].startswith("unreachable")


def test_readyz_is_ok_on_the_embedded_default(web, settings):
    settings.REDIS_URL = None
    settings.INFERENCE_QUEUE_URL = None
    ready = web.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "checks": {"database": "ok"}}


def test_readyz_fails_when_redis_is_unreachable(web, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.INFERENCE_QUEUE_URL = None
    ready = web.get("/readyz")
    assert ready.status_code == 503 and ready.json()["failed"] == ["redis"]


def test_readyz_counts_live_workers_per_model(web, settings, redis_url, workers, worker_pool):
    settings.REDIS_URL = redis_url
    body = web.get("/readyz").json()
    assert body["checks"]["redis"] == "ok" and body["checks"]["workers"][TINY] == 2


def test_readyz_fails_for_a_model_with_no_live_worker(web, settings, redis_url, queue):
    settings.REDIS_URL = redis_url
    from core.catalogue import served_models

    models = sorted(spec.id for spec in served_models())
    worker_less = [m for m in models if m != TINY]
    if not worker_less:
        pytest.skip("the test catalogue has only the model the workers serve")
    ready = web.get("/readyz")
    assert ready.status_code == 503 and ready.json()["failed"] == ["workers"]
    assert all(ready.json()["checks"]["workers"][m] == 0 for m in worker_less)


def test_readyz_flips_when_the_last_worker_of_a_model_stops_and_back_when_one_starts(web, settings, redis_url,
                                                                                     workers, worker_pool):
    settings.REDIS_URL = redis_url

    def probe():
        ready, live = web.get("/readyz"), web.get("/livez")
        assert live.status_code == 200 and live.json() == {"status": "ok"}  # liveness never looks at workers
        return ready.status_code, ready.json()

    status, body = probe()
    assert body["checks"]["workers"][TINY] == 2
    for proc in workers:  # the model's last workers stop (and drain: they leave the queue at once)
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        proc.wait(timeout=30)

    def no_worker():
        status, body = probe()
        return (status, body) if body["checks"]["workers"][TINY] == 0 else None

    status, body = wait_until(no_worker, timeout=30, interval=0.2, message="/readyz to count no worker")
    assert status == 503 and "workers" in body["failed"]
    worker_pool.ensure(1)
    status, body = probe()
    assert body["checks"]["workers"][TINY] == 1
    others_served = all(count for count in body["checks"]["workers"].values())
    assert (status, body.get("failed")) == ((200, None) if others_served else (503, ["workers"]))


class _Engine:
    """What /livez asks of an embedded engine: how long its step under way has run, and where its thread is."""

    def __init__(self, stalled: float):
        self.stalled = stalled

    def stalled_for(self) -> float:
        return self.stalled

    def thread_stack(self) -> str:
        return '  File "model_runner.py", line 1, in run\n'


def test_livez_fails_while_an_embedded_engine_hangs_in_one_step_and_names_its_model(web, settings, monkeypatch,
                                                                                    caplog):
    from inference import dispatch

    settings.REDIS_URL = settings.INFERENCE_QUEUE_URL = None
    settings.INFERENCE_STALL_TIMEOUT_S = 120
    engine = _Engine(stalled=119.0)  # a long step, not yet a hung one
    monkeypatch.setitem(dispatch.get_backend()._engines, "m", engine)
    assert web.get("/livez").json() == {"status": "ok"}
    engine.stalled = 121.0
    live = web.get("/livez")
    assert live.status_code == 503 and live.json() == {"status": "stalled", "stalled": ["m"]}
    assert web.get("/health").json() == live.json()  # vLLM's name for it
    assert "The engine of m has run one step for 121 s".lower() in caplog.text.lower()
    assert "model_runner.py" in caplog.text  # where its thread is held
    settings.INFERENCE_STALL_TIMEOUT_S = 0  # never
    assert web.get("/livez").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/health", "/readyz"])
def test_probes_answer_over_plain_http_on_an_https_only_site(settings, path):
    """A load balancer's probe speaks http: it is answered, where any other page is redirected to https."""
    from django.test import Client

    settings.SECURE_SSL_REDIRECT = True
    settings.REDIS_URL = settings.INFERENCE_QUEUE_URL = None
    assert Client().get(path).status_code in (200, 503)
    assert Client().get("/v1/models").status_code == 301
