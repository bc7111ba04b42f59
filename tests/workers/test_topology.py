"""`make up` / `make down`: the whole scaled-out topology on this machine, as an operator starts it.

`make up` runs in a temporary DATA_DIR with two web replicas behind one port, one inference worker on the
default model (prepared in var/models by `make test`, reused through MODEL_CACHE_DIR), PostgreSQL, Redis,
Celery and beat. The official OpenAI SDK talks to the shared port on new connections until both replicas
have answered; Debian's Prometheus, configured from platform/prometheus.yml, scrapes each replica and the
worker and must report exactly the requests and tokens sent; `make down` must leave no process behind.

Skipped, with the reason, where PostgreSQL's server binaries or the prometheus binary are missing.
"""
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from glob import glob
from pathlib import Path

import pytest
import yaml
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.poll import wait_until

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
REPLICAS, WORKERS = 2, 1
UP_TIMEOUT = 420  # a cold start on a busy 2-core machine: initdb, migrations, the worker's load and warm-up
BATCH, MAX_BATCHES = 4, 6  # requests sent at once, each on its own connection; batches until both replicas served


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections: ports chosen below it stay free until bound (a port
    in that range, free when chosen, was taken by a client's connection before Prometheus bound it minutes later)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _started_by(marker: str, data_dir: Path) -> list[int]:
    """The processes `make up` started: those whose environment carries the run's marker (PostgreSQL and Redis
    write their titles over theirs) or whose working directory is in its data directory, and their children."""
    parents, found = {}, set()
    for proc in glob("/proc/[0-9]*"):
        pid = int(proc.rsplit("/", 1)[1])
        try:
            parents[pid] = int(Path(proc, "stat").read_text().rsplit(")", 1)[1].split()[1])
            if f"TOPOLOGY_TEST_RUN={marker}".encode() in Path(proc, "environ").read_bytes().split(b"\0") \
                    or os.readlink(f"{proc}/cwd").startswith(f"{data_dir}/"):
                found.add(pid)
        except OSError:
            continue
    grown = True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grown = bool(children)
    found.discard(os.getpid())
    return sorted(found)


def _samples(text: str, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


class Topology:
    def __init__(self):
        for _ in range(50):
            port = random.randrange(10000, max(_ephemeral_low(), 11000) - 400)
            self.replica_ports = [port + i for i in range(1, REPLICAS + 1)]
            self.worker_ports = [port + 100 + i for i in range(1, WORKERS + 1)]
            self.pg_port, self.redis_port, self.prometheus_port = port + 300, port + 301, port + 302
            self.ports = [port, *self.replica_ports, *self.worker_ports, self.pg_port, self.redis_port]
            if _ports_free(*self.ports, self.prometheus_port):
                break
        self.port = port
        # PostgreSQL runs as the postgres user when the tests run as root: a folder it can reach.
        self.data_dir = Path(tempfile.mkdtemp(prefix="topology-", dir="/tmp"))
        self.data_dir.chmod(0o755)
        self.marker = secrets.token_hex(8)
        self.metrics_token = secrets.token_urlsafe(16)
        self.env = {**os.environ, "DATA_DIR": str(self.data_dir), "MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
                    "METRICS_TOKEN": self.metrics_token, "TOPOLOGY_TEST_RUN": self.marker,
                    "UP_TIMEOUT": str(UP_TIMEOUT - 60), "PYTHONUNBUFFERED": "1"}
        self.make_args = [f"PORT={self.port}", f"PG_PORT={self.pg_port}", f"REDIS_PORT={self.redis_port}",
                          f"WEB_REPLICAS={REPLICAS}", f"WORKERS={WORKERS}", f"DATA_DIR={self.data_dir}"]
        self.up_output = ""
        self.key = None
        self.sent = 0
        self.completion_tokens = 0
        self.worker_tokens_before = 0.0
        self.down = None

    def make(self, target: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "--no-print-directory", target, *self.make_args], cwd=ROOT, env=self.env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def metrics(self, port: int) -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Authorization": f"Bearer {self.metrics_token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read().decode()

    def settled(self, port: int) -> float:
        return sum(v for labels, v in _samples(self.metrics(port), "platform_requests_settled_total").items()
                   if ("status", "completed") in labels)

    def worker_tokens(self) -> float:
        return sum(sum(_samples(self.metrics(port), "inference_worker_generated_tokens_total").values())
                   for port in self.worker_ports)

    def ask(self, i: int) -> int:
        """One chat completion on a connection of its own (a new client); its completion tokens."""
        with OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=self.key, max_retries=0,
                    timeout=120) as client:
            if i % 2:
                stream = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"Say a colour ({i})."}], max_tokens=6,
                    stream=True, stream_options={"include_usage": True})
                chunks = list(stream)
                assert any(c.choices and c.choices[0].delta.content for c in chunks)
                return chunks[-1].usage.completion_tokens
            answer = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"Name a fruit ({i})."}], max_tokens=6)
            assert answer.choices[0].message.content
            return answer.usage.completion_tokens

    def processes(self) -> list[int]:
        return _started_by(self.marker, self.data_dir)

    def stop_everything(self):
        """The last resort after `make down`: whatever still carries the marker is killed."""
        if (self.data_dir / "up" / "state").exists():
            try:
                self.make("down", timeout=120)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def topology():
    if not glob("/usr/lib/postgresql/*/bin/initdb") and not shutil.which("initdb"):
        pytest.skip("PostgreSQL's server binaries are missing (apt-get install postgresql)")
    if shutil.which("redis-server") is None:
        if os.environ.get("SKIP_REDIS") == "1":
            pytest.skip("SKIP_REDIS=1: redis-server is not installed")
        pytest.fail("redis-server is not installed (apt-get install redis-server), or set SKIP_REDIS=1",
                    pytrace=False)
    top = Topology()
    try:
        started = time.monotonic()
        up = top.make("up", timeout=UP_TIMEOUT)
        top.up_output = up.stdout + up.stderr
        assert up.returncode == 0, f"make up failed:\n{top.up_output[-4000:]}"
        print(f"make up: ready in {time.monotonic() - started:.0f} s")
        found = re.search(r"API key:\s+(sk-\S+)", up.stdout)
        assert found, f"make up printed no API key:\n{up.stdout[-2000:]}"
        top.key = found.group(1)
        top.worker_tokens_before = top.worker_tokens()  # the worker's warm-up requests generated some already

        # New connections spread over the replicas (the kernel hashes each connection to one of them): send
        # batches until both have served, a bounded number of times.
        with ThreadPoolExecutor(BATCH) as pool:
            for _ in range(MAX_BATCHES):
                top.completion_tokens += sum(pool.map(top.ask, range(top.sent, top.sent + BATCH)))
                top.sent += BATCH
                if all(top.settled(port) > 0 for port in top.replica_ports):
                    break
        yield top
    finally:
        top.stop_everything()


def test_make_up_serves_the_openai_sdk_from_every_replica_behind_one_port(topology):
    assert f"http://127.0.0.1:{topology.port}" in topology.up_output
    per_replica = {}

    def all_settled():  # a stream is settled just after its last chunk
        per_replica.update({port: topology.settled(port) for port in topology.replica_ports})
        return sum(per_replica.values()) == topology.sent

    wait_until(all_settled, timeout=30, message=lambda: f"{topology.sent} requests settled: {per_replica}")
    assert all(count > 0 for count in per_replica.values()), f"a replica served nothing: {per_replica}"
    tokens = sum(sum(v for labels, v in _samples(topology.metrics(port), "platform_tokens_total").items()
                     if ("kind", "completion") in labels) for port in topology.replica_ports)
    assert tokens == topology.completion_tokens > 0


def test_prometheus_reports_the_requests_and_tokens_sent(topology, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is missing (apt-get install prometheus)")
    config = yaml.safe_load((ROOT / "platform" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    token_file = tmp_path / "metrics-token"
    token_file.write_text(topology.metrics_token)
    jobs["platform-web"]["authorization"]["credentials_file"] = str(token_file)
    jobs["platform-web"]["static_configs"] = [{"targets": [f"127.0.0.1:{p}" for p in topology.replica_ports]}]
    jobs["platform-workers"]["static_configs"] = [{"targets": [f"127.0.0.1:{p}" for p in topology.worker_ports]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    api = f"http://127.0.0.1:{topology.prometheus_port}"
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{topology.prometheus_port}"],
                            stdout=log, stderr=subprocess.STDOUT)

    def query(expression: str) -> float | None:
        url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                result = json.loads(answer.read())["data"]["result"]
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
            return None
        return float(result[0]["value"][1]) if result else None

    seen = {}

    def reports(expression: str, expected: float):
        def matches():
            seen[expression] = query(expression)
            return seen[expression] == expected
        wait_until(matches, timeout=60, interval=0.5, message=lambda: f"{expression} = {expected}: {seen}")

    try:
        reports('count(up{job="platform-web"} == 1)', REPLICAS)
        reports('count(up{job="platform-workers"} == 1)', WORKERS)
        reports(f'sum(platform_requests_settled_total{{model="{MODEL}",status="completed"}})', topology.sent)
        reports(f'sum(platform_tokens_total{{model="{MODEL}",kind="completion"}})', topology.completion_tokens)
        # Each replica's own series: both served.
        reports(f'count(platform_requests_settled_total{{model="{MODEL}",status="completed"}} > 0)', REPLICAS)
        # The worker generated exactly those tokens (after its warm-up's).
        reports(f'sum(inference_worker_generated_tokens_total{{model="{MODEL}"}})',
                topology.worker_tokens_before + topology.completion_tokens)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_make_down_stops_everything_make_up_started(topology):
    running = topology.processes()
    commands = " | ".join(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                          for pid in running)
    for program in ("honcho", "platform/web.py", "inference_worker", "celery -A config worker",
                    "celery -A config beat", "postgres", "redis-server"):
        assert program in commands, f"{program} is not running: {commands}"
    down = topology.make("down", timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    left = sorted({pid for pid in running if Path(f"/proc/{pid}").exists()} | set(topology.processes()))
    assert not left, f"still running after make down: {left}"
    assert all(_closed(port) for port in topology.ports), "a port of the topology still answers"
    assert "stopping what was left" not in down.stdout, f"make down had to kill leftovers:\n{down.stdout}"
