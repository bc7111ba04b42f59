"""Two real `manage.py inference_worker` processes on the run's redis-server (tests/plugins/redis_server.py),
behind the run's live API server (tests/plugins/live_server.py).

The workers are started once per session; a worker a test killed or stopped is replaced before the next
test (`workers` fixture). Without redis-server the tests fail, unless SKIP_REDIS=1.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from inference.queue import protocol
from tests.plugins.live_server import TINY
from tests.poll import wait_until

ROOT = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT = 90  # importing torch and loading the model, on a busy 2-core machine


@pytest.fixture
def client(openai_client):
    """The OpenAI SDK on the live server (Django's test client keeps the name `client` outside these folders)."""
    return openai_client


@pytest.fixture
def rds(redis_url):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    r.close()


class WorkerPool:
    """Worker processes for one model; each is known by its pid and, once it beats, its worker id."""

    def __init__(self, redis_url: str, models_file: str, folder: Path, model: str = TINY):
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.model = model
        self.folder = folder
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "INFERENCE_QUEUE_URL": redis_url,
            "SECRET_KEY": "test-only-worker-secret",
            "MODELS_FILE": models_file,
            "DATA_DIR": str(folder / "data"),
            "HF_HUB_OFFLINE": "1",
            "INFERENCE_DTYPE": "float32",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: list[subprocess.Popen] = []
        self._count = 0

    def start(self, *extra: str) -> subprocess.Popen:
        self._count += 1
        log = open(self.folder / f"worker-{self._count}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "inference_worker", "--model", self.model, *extra],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        proc.log_path = self.folder / f"worker-{self._count}.log"
        log.close()
        self.procs.append(proc)
        return proc

    def log_of(self, proc) -> str:
        return proc.log_path.read_text(errors="replace")[-3000:]

    def heartbeats(self) -> dict[int, dict]:
        """pid -> heartbeat of every live worker of the model that accepts requests."""
        out = {}
        for worker in self.redis.zrange(protocol.workers_key(self.model), 0, -1):
            raw = self.redis.get(protocol.heartbeat_key(self.model, worker))
            if raw:
                info = json.loads(raw)
                out[info["pid"]] = info
        return out

    def alive(self) -> list[subprocess.Popen]:
        return [proc for proc in self.procs if proc.poll() is None]

    def ensure(self, n: int = 2) -> list[subprocess.Popen]:
        """Exactly n running workers, all beating."""
        self.procs = self.alive()
        while len(self.procs) < n:
            self.start()

        def ready():
            for proc in self.procs:
                if proc.poll() is not None:
                    raise AssertionError(f"worker exited with {proc.returncode}:\n{self.log_of(proc)}")
            beats = self.heartbeats()
            return all(proc.pid in beats for proc in self.procs)

        wait_until(ready, timeout=WORKER_START_TIMEOUT, interval=0.1, message=f"{n} inference workers to beat")
        return self.procs

    def worker_id(self, proc) -> str:
        return self.heartbeats()[proc.pid]["worker"]

    def proc_of(self, worker_id: str) -> subprocess.Popen:
        for proc in self.procs:
            if worker_id.split("-")[-2] == str(proc.pid):
                return proc
        raise AssertionError(f"no worker process for {worker_id}")

    def stop_all(self):
        for proc in self.alive():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.redis.close()


@pytest.fixture(scope="session")
def worker_pool(redis_url, models_file, tmp_path_factory):
    pool = WorkerPool(redis_url, models_file, tmp_path_factory.mktemp("workers"))
    for _ in range(2):
        pool.start()  # they load while the rest of the set-up runs; `workers` waits for their heartbeats
    yield pool
    pool.stop_all()


@pytest.fixture
def queue(settings, redis_url, server):
    """The live API server talks to the workers through this Redis for the test."""
    settings.INFERENCE_QUEUE_URL = redis_url
    settings.INFERENCE_QUEUE_LIMIT = 256
    from inference.dispatch import get_backend

    backend = get_backend()
    assert type(backend).__name__ == "RedisBackend"
    return backend


@pytest.fixture
def workers(worker_pool, queue):
    """Two live workers serving TINY (those killed by an earlier test are replaced)."""
    return worker_pool.ensure(2)
