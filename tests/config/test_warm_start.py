"""Warm start: a web process loads what the first request needs before /readyz says it is ready.

The server tests start `uvicorn config.asgi:application --lifespan off` as `make run` does (the embedded default:
SQLite, the engine in the process), in a data directory of their own, serving the tiny model.
"""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.plugins.live_server import TINY, TINY_PRICE
from tests.poll import wait_until

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120  # importing torch, loading and compiling, on a busy 2-core machine
HELLO = {"model": TINY, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4, "temperature": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, folder: Path, tiny_model_path: str, **env):
        self.folder = folder
        folder.mkdir()
        models = folder / "models.json"
        models.write_text(json.dumps({TINY: {"path": tiny_model_path, **TINY_PRICE}}))
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("INFERENCE_") and k not in ("DATABASE_URL", "REDIS_URL", "MODELS_FILE")}
        self.env.update(DATA_DIR=str(folder / "data"), MODEL_CACHE_DIR=str(folder / "no-models"),
                        MODELS_FILE=str(models), HF_HUB_OFFLINE="1", INFERENCE_DTYPE="float32", **env)
        for argv in (["migrate", "--no-input"], ["createkey", "--org", "warm", "--credit-usd", "1"]):
            done = subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=self.env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-3000:]
        self.key = done.stdout.split()[-1]
        self.port = _free_port()
        self.log_path = folder / "server.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port",
                 str(self.port), "--no-access-log", "--lifespan", "off"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=START_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def get(self, path: str):
        """The response, or None while nothing listens yet."""
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.http.get(path)
        except httpx.TransportError:
            return None

    def chat(self, body: dict):
        return self.http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {self.key}"})

    def stop(self):
        self.http.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)


@pytest.fixture
def start_server(tmp_path, tiny_model_path):
    servers = []

    def start(**env) -> Server:
        servers.append(Server(tmp_path / f"server-{len(servers)}", tiny_model_path, **env))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_the_engine_loads_before_readyz_says_ready_and_a_request_meanwhile_waits_for_it(start_server):
    server = start_server()
    live = wait_until(lambda: server.get("/livez"), timeout=START_TIMEOUT, message=lambda: f"/livez\n{server.log()}")
    assert live.status_code == 200 and live.json() == {"status": "ok"}  # at once, while the engine loads

    ready = server.get("/readyz")
    assert ready.status_code == 503, ready.json()
    body = ready.json()
    assert body["status"] == "loading" and body["failed"] == ["warm_start"]
    assert body["checks"]["warm_start"][f"engine {TINY}"] == "loading"
    assert body["checks"]["database"] == "ok"

    answer = server.chat(HELLO)  # sent while it loads: it waits, no error
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 4 and answer.json()["choices"][0]["message"]["content"]

    ready = wait_until(lambda: (r := server.get("/readyz")).status_code == 200 and r, timeout=START_TIMEOUT,
                       message=lambda: f"/readyz to answer 200\n{server.log()}")
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "warm_start": {
        "urls": "ready", f"engine {TINY}": "ready"}}}
    assert f"warm start: engine {TINY} ready in" in server.log()


def test_with_warm_start_off_readyz_is_ready_at_once_and_the_first_request_loads_the_engine(start_server):
    server = start_server(INFERENCE_WARM_START="0")
    ready = wait_until(lambda: server.get("/readyz"), timeout=START_TIMEOUT, message=lambda: f"/readyz\n{server.log()}")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "checks": {"database": "ok"}}
    answer = server.chat(HELLO)
    assert answer.status_code == 200, answer.text
    assert "warm start" not in server.log()


# -- in this process: the states /readyz reports ---------------------------------------------------------------

@pytest.fixture
def web():
    from django.test import Client

    return Client()


@pytest.fixture
def warm_start(monkeypatch):
    """Install a WarmStart (or a stand-in) as this process's, for /readyz."""
    from inference import dispatch

    def install(state):
        monkeypatch.setattr(dispatch, "_warm_start", state)
        return state

    return install


class _Stub:
    def __init__(self, state):
        self._state = state

    def state(self):
        return dict(self._state)


@pytest.mark.django_db
def test_readyz_says_loading_then_names_a_part_that_failed(web, settings, warm_start):
    settings.REDIS_URL = settings.INFERENCE_QUEUE_URL = None
    warm_start(_Stub({"urls": "ready", "engine m": "loading"}))
    loading = web.get("/readyz")
    assert loading.status_code == 503 and loading.json()["status"] == "loading"
    warm_start(_Stub({"urls": "ready", "engine m": "failed: model m could not be loaded"}))
    failed = web.get("/readyz")
    assert failed.status_code == 503 and failed.json()["status"] == "error"
    assert failed.json()["failed"] == ["warm_start"]
    assert failed.json()["checks"]["warm_start"]["engine m"] == "failed: model m could not be loaded"


@pytest.mark.django_db
def test_readyz_names_the_models_whose_engine_still_compiles_its_decode_step(web, settings, warm_start,
                                                                            monkeypatch):
    """Ready: their engines answer, eager, while a child process compiles the decode step (background_compile.py)."""
    from inference import dispatch

    settings.REDIS_URL = settings.INFERENCE_QUEUE_URL = None
    warm_start(_Stub({"urls": "ready", "engine m": "ready"}))
    backend = dispatch.get_backend()
    engine = type("Engine", (), {"stats": lambda self: {"compiling": self.compiling}})()
    monkeypatch.setitem(backend._engines, "m", engine)
    engine.compiling = 1
    ready = web.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok" and ready.json()["compiling"] == ["m"]
    engine.compiling = 0
    assert "compiling" not in web.get("/readyz").json()


@pytest.mark.django_db
def test_a_queue_web_host_loads_the_tokenizers_it_has_files_for(web, settings, warm_start, tiny_model_path,
                                                               tmp_path):
    """With the worker queue the web host loads tokenizers only (no Redis needed for that), one per model whose
    files are here; a model whose files cannot be read is named as failed."""
    from inference.dispatch import WarmStart, get_backend

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "tokenizer_config.json").write_text("not json")
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"good": {"path": tiny_model_path, **TINY_PRICE},
                                  "broken": {"path": str(broken), **TINY_PRICE},
                                  "absent": {"path": str(tmp_path / "absent"), **TINY_PRICE}}))
    settings.MODELS_FILE, settings.MODEL_CACHE_DIR = str(models), tmp_path  # no default model here
    settings.REDIS_URL = None
    settings.INFERENCE_QUEUE_URL = "redis://127.0.0.1:1/0"  # nothing listens: only /readyz's workers check asks
    loading = warm_start(WarmStart())
    assert set(loading.state()) == {"urls", "tokenizer good", "tokenizer broken"}
    loading.thread.start()
    assert loading.finished.wait(60)
    state = loading.state()
    assert state["urls"] == state["tokenizer good"] == "ready"
    assert state["tokenizer broken"].startswith("failed: model broken could not be loaded")
    assert any(key[0] == "good" for key in get_backend()._tokenizers)
    body = web.get("/readyz").json()
    assert body["failed"] == ["warm_start", "workers"] and body["checks"]["warm_start"] == state
