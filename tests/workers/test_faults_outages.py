"""PostgreSQL and Redis going away under load, then coming back, with real processes.

A throwaway PostgreSQL cluster (as tests/run.sh starts one), a redis-server of this module's own, one
`manage.py inference_worker` serving the tiny model and a uvicorn web process with DATABASE_URL and REDIS_URL
pointing at them. While threads keep sending chat completions (whole and streamed) through the web process,
PostgreSQL is stopped with `pg_ctl stop -m immediate` and started again; then redis-server is killed and started
again. Every answer must be a 200 or a 503 with Retry-After and an OpenAI error object (never a 500, never a
connection closed without an answer); requests succeed again without restarting any process; and the ledger adds
up: balance == ledger sum, nothing held once the sweeper has run, every 200 charged exactly its tokens once.
Some long streams are generating as each outage starts: with the database down they wait for it to record their
charge, then end whole. While each service is down, every kind of path is asked once (the OpenAI API whole and
streamed, the sessions and billing APIs, a dashboard page, the log-in form, the playground's socket) and answers a
503; the same processes and socket serve again once it is back.

Skipped only when PostgreSQL (initdb) or redis-server is not installed. The last tests run in this process, on the
test database: what those above rely on (a charge the database cannot record yet, what counts as an outage).
"""
import asyncio
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.plugins.live_server import TINY, tiny_cost
from tests.poll import wait_until

ROOT = Path(__file__).resolve().parents[2]
CREDIT_MICRO = 1_000_000
MAX_TOKENS = 12
START_TIMEOUT = 120  # a worker imports torch and loads the model; the web process imports the project
REQUEST_TIMEOUT = 120  # no request may take longer, outage included
THREADS = 8
BURST = 40  # requests of each scenario, at least
LONG_STREAMS = 3  # streams still generating when the outage starts
LONG_TOKENS = 1500  # several seconds under the burst: still generating when the outage starts, on a slow machine too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM to the process group, SIGKILL to what is left after `timeout`."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # also any child the group leader left behind
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


class PostgresFailed(Exception):
    pass


class Postgres:
    """A PostgreSQL cluster in a temporary folder on a loopback port, stopped and started at will."""

    def __init__(self, pgbin: str, folder: str):
        self.pgbin = pgbin
        self.folder = folder
        self.port = _free_port()
        self.as_pg = []
        if os.getuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(folder, "postgres")
            self.as_pg = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run([*self.as_pg, f"{self.pgbin}/{program}", "-D", self.folder, *args],
                                capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise PostgresFailed(f"{program} {' '.join(args)}: {result.stdout[-1500:]}{result.stderr[-1500:]}")

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", *args)

    def init(self) -> None:
        self._run("initdb", "-U", "postgres", "--auth=trust")

    def start(self) -> None:
        self._ctl("-l", f"{self.folder}/log", "-w", "-o",
                  f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c max_connections=200 "
                  "-c fsync=off", "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")

    def close(self) -> None:
        try:
            self._ctl("-m", "immediate", "stop")
        except PostgresFailed:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisServer:
    """A redis-server without persistence on a fixed loopback port: killed and started again at will."""

    def __init__(self, binary: str, folder: str):
        self.binary = binary
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        with open(f"{self.folder}/redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.folder], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        probe = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {Path(self.folder, 'redis.log').read_text()[-2000:]}")
            try:
                return probe.ping()
            except redis.ConnectionError:
                return False

        try:
            wait_until(up, timeout=15, message="redis-server to answer")
        finally:
            probe.close()

    def stop(self) -> None:
        """Killed, as a crash would: clients see their connections drop; its data is gone."""
        if self.proc is not None:
            _stop_group(self.proc, timeout=0)
            self.proc = None


@dataclass
class Stack:
    url: str
    secret: str
    env: dict
    postgres: Postgres
    redis: RedisServer
    web: subprocess.Popen
    folder: Path
    sent: list = field(default_factory=list)  # every Outcome of the module's bursts
    answered: set = field(default_factory=set)  # request ids of every chat answered in full (200, playground done)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def manage(self, code: str) -> str:
        """Run Python in a `manage.py shell` on the stack's database and Redis; its output."""
        result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def web_log(self) -> str:
        return (self.folder / "web.log").read_text(errors="replace")[-4000:]


def _installed() -> tuple[str, str]:
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: [
        int(part) if part.isdigit() else 0 for part in Path(p).parts])
    initdb = initdb[-1] if initdb else shutil.which("initdb")
    if initdb is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql): no outage tests")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server): no outage tests")
    return str(Path(initdb).parent), redis_server


@pytest.fixture(scope="module")
def stack(models_file):
    pgbin, redis_binary = _installed()
    folder = Path(tempfile.mkdtemp(prefix="outages-"))
    procs: list[subprocess.Popen] = []
    postgres = Postgres(pgbin, tempfile.mkdtemp(prefix="pgtest-"))  # its own: the postgres user must reach it
    redis_server = RedisServer(redis_binary, str(folder))
    try:
        postgres.init()
        postgres.start()
        redis_server.start()
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis_server.url,
            "SECRET_KEY": "test-only-outages",
            "MODELS_FILE": models_file,
            "DATA_DIR": str(folder / "data"),
            "HF_HUB_OFFLINE": "1",
            "INFERENCE_DTYPE": "float32",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "SECURE_SSL_REDIRECT": "0",  # plain http on loopback
            "CSRF_COOKIE_SECURE": "0",
            "SESSION_COOKIE_SECURE": "0",
            "LOG_LEVEL": "WARNING",
            "DB_CONN_MAX_AGE": "60",  # as platform/example.env: kept connections must be replaced after a restart
        }
        env.pop("TEST_DB_NAME", None)
        migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=300)
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        created = subprocess.run([sys.executable, "manage.py", "createkey", "--org", "outages", "--credit-usd",
                                  str(CREDIT_MICRO / 1e6)], cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=120)
        assert created.returncode == 0, created.stderr[-3000:]
        secret = created.stdout.strip()
        with open(folder / "worker.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "manage.py", "inference_worker", "--model", TINY],
                                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        with open(folder / "web.log", "wb") as log:
            web = subprocess.Popen([sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                                    "--port", str(port), "--log-level", "warning"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(web)
        url = f"http://127.0.0.1:{port}"
        stack = Stack(url, secret, env, postgres, redis_server, web, folder)

        def serving():
            for proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"a process exited with {proc.returncode}:\n{stack.web_log()}\n"
                                         f"{(folder / 'worker.log').read_text(errors='replace')[-3000:]}")
            try:
                return send(stack, stream=False).status == 200
            except httpx.TransportError:
                return False

        wait_until(serving, timeout=START_TIMEOUT, interval=0.5, message="the web process and its worker to serve")
        yield stack
    finally:
        for proc in reversed(procs):
            _stop_group(proc)
        redis_server.stop()
        postgres.close()
        shutil.rmtree(folder, ignore_errors=True)


# -- one request, as a client sees it ---------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int | None  # None: no answer at all (the connection failed or dropped)
    sent: float  # time.monotonic()
    answered: float
    stream: bool
    request_id: str | None = None
    retry_after: str | None = None
    error: dict | None = None  # the error object, of the body or of a stream's error event
    usage: dict | None = None  # the usage the client was told (a whole body, or a stream's usage chunk)
    done: bool = False  # a stream ended with [DONE]
    failure: str = ""  # what went wrong at the transport level


def send(stack: Stack, *, stream: bool, max_tokens: int = MAX_TOKENS,
         generating: threading.Event | None = None) -> Outcome:
    """One chat completion; `generating` is set once a stream's first token arrived."""
    body = {"model": TINY, "messages": [{"role": "user", "content": "Tell me about the sea."}],
            "max_tokens": max_tokens, "temperature": 0}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    outcome = Outcome(None, time.monotonic(), 0.0, stream)
    try:
        with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT) as http:
            with http.stream("POST", "/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {stack.secret}"}) as response:
                outcome.status = response.status_code
                outcome.request_id = response.headers.get("x-request-id")
                outcome.retry_after = response.headers.get("retry-after")
                if response.status_code != 200 or not stream:
                    response.read()
                    data = response.json()
                    outcome.error = data.get("error")
                    outcome.usage = data.get("usage")
                else:
                    for line in response.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        payload = line[len("data: "):]
                        if payload == "[DONE]":
                            outcome.done = True
                            break
                        event = json.loads(payload)
                        if generating is not None and event.get("choices") and event["choices"][0]["delta"].get(
                                "content"):
                            generating.set()
                        if "error" in event:
                            outcome.error = event["error"]
                        elif event.get("usage"):
                            outcome.usage = event["usage"]
    except (httpx.HTTPError, ValueError) as exc:
        outcome.failure = f"{type(exc).__name__}: {exc}"
    outcome.answered = time.monotonic()
    with stack.lock:
        stack.sent.append(outcome)
        if complete(outcome):
            stack.answered.add(outcome.request_id)
    return outcome


def complete(outcome: Outcome) -> bool:
    """A 200 with the whole answer: a body with its usage, or a stream with its usage and [DONE]."""
    return outcome.status == 200 and outcome.error is None and outcome.usage is not None and (
        outcome.done or not outcome.stream)


class Burst:
    """THREADS threads sending requests back to back (every third one streamed) until told to stop."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.outcomes: list[Outcome] = []
        self.pending = 0  # requests under way
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(THREADS)]

    def _run(self, index: int) -> None:
        n = 0
        while not self.stopping.is_set():
            self.record(lambda: send(self.stack, stream=(index + n) % 3 == 0))
            n += 1

    def record(self, request) -> None:
        with self.lock:
            self.pending += 1
        try:
            outcome = request()
        finally:
            with self.lock:
                self.pending -= 1
        with self.lock:
            self.outcomes.append(outcome)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=REQUEST_TIMEOUT + 30)
        wait_until(lambda: self.pending == 0, timeout=REQUEST_TIMEOUT, message="the long answers to end")

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)

    def count(self, predicate) -> int:
        return sum(1 for o in self.snapshot() if predicate(o))


@dataclass
class Scenario:
    name: str
    outcomes: list[Outcome]
    down_at: float
    up_at: float
    resumed_after_s: float
    statuses: dict = field(default_factory=dict)
    long_under_way: int = LONG_STREAMS  # long streams still generating when the outage began
    restart_at: float = 0.0  # when the service was being started again (up_at: once it was)


def run_outage(stack: Stack, name: str, stop, start, *, down_s: float = 3.0) -> Scenario:
    """A burst of requests; `stop` once some succeeded, `start` again once the outage was answered; on until
    requests sent after the restart succeed and BURST were sent."""
    with Burst(stack) as burst:
        wait_until(lambda: burst.count(complete) >= THREADS, timeout=REQUEST_TIMEOUT,
                   message=lambda: f"{THREADS} answers before the outage: {burst.snapshot()[-3:]}")
        # Some long answers are being generated when it goes: they end after it did.
        long = [threading.Event() for _ in range(LONG_STREAMS)]
        ended = [threading.Event() for _ in range(LONG_STREAMS)]
        for event, end in zip(long, ended):
            threading.Thread(target=burst.record, args=(lambda e=event, d=end: _ended(d, send(
                stack, stream=True, max_tokens=LONG_TOKENS, generating=e)),), daemon=True).start()
        wait_until(lambda: all(e.is_set() for e in long), timeout=REQUEST_TIMEOUT,
                   message=lambda: f"long answers to start: {burst.snapshot()[-3:]}")
        # The first may have ended while the last was still waiting for its first token (a busy machine).
        under_way = sum(not end.is_set() for end in ended)
        stop()
        down_at = time.monotonic()
        wait_until(lambda: burst.count(lambda o: o.sent > down_at and o.status == 503) >= 3
                   and time.monotonic() - down_at >= down_s, timeout=REQUEST_TIMEOUT,
                   message=lambda: f"503s while {name} is down: {burst.snapshot()[-3:]}")
        restart_at = time.monotonic()
        start()  # returns once it accepts connections: a stream waiting for it may be answered before this returns
        up_at = time.monotonic()

        def resumed():
            done = [o.answered for o in burst.snapshot() if o.sent >= up_at and complete(o)]
            return min(done) if done else None

        first = wait_until(resumed, timeout=REQUEST_TIMEOUT, interval=0.1,
                           message=lambda: f"a request to succeed after {name} came back: {burst.snapshot()[-3:]}\n"
                                           f"{stack.web_log()}")
        wait_until(lambda: len(burst.snapshot()) >= BURST
                   and burst.count(lambda o: o.sent >= up_at and complete(o)) >= THREADS,
                   timeout=REQUEST_TIMEOUT, message=f"{BURST} requests and {THREADS} answers after {name} came back")
    outcomes = burst.snapshot()
    statuses: dict = {}
    for o in outcomes:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    return Scenario(name, outcomes, down_at, up_at, first - up_at, statuses, under_way, restart_at)


def _ended(event: threading.Event, outcome: Outcome) -> Outcome:
    event.set()
    return outcome


def assert_only_answers(scenario: Scenario, codes: set[str]) -> None:
    """200s and 503s with Retry-After and an error object, nothing else; 503s only with the outage's codes."""
    for o in scenario.outcomes:
        assert o.status in (200, 503), (scenario.name, o)
        assert not o.failure, (scenario.name, o)
        if o.status == 503:
            assert o.retry_after and o.retry_after.isdigit(), (scenario.name, o)
            assert o.error and o.error["message"] and o.error["type"] == "server_error" and o.error["code"], o
        elif o.stream:  # a stream ends with [DONE], or with an error object once it had started
            assert o.done or (o.error and o.error["message"] and o.error["code"]), (scenario.name, o)
        else:
            assert complete(o), (scenario.name, o)
    seen = {o.error["code"] for o in scenario.outcomes if o.status == 503}
    assert seen and seen <= codes, (scenario.name, seen)


# -- the ledger ---------------------------------------------------------------------------------------------------

LEDGER = """
import json
from datetime import timedelta
from django.conf import settings
from django.utils import timezone
from billing.models import CreditAccount, Hold, LedgerEntry, UsageRecord
from billing.selectors import ledger_sum_micro
from billing.sweeper import sweep_stale_holds

# The sweeper as it runs once these holds are HOLD_STALE_AFTER_S old.
swept = sweep_stale_holds(now=timezone.now() + timedelta(seconds=settings.HOLD_STALE_AFTER_S + 1))
account = CreditAccount.objects.get(organization__name="outages")
print(json.dumps({
    "swept": swept,
    "balance": account.balance_micro,
    "held": account.held_micro,
    "ledger_sum": ledger_sum_micro(account=account),
    "active_holds": Hold.objects.filter(account=account, status=Hold.Status.ACTIVE).count(),
    "usage": list(UsageRecord.objects.filter(organization_id=account.organization_id).values(
        "request_id", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_micro", "status")),
    "charges": list(LedgerEntry.objects.filter(account=account, kind=LedgerEntry.Kind.USAGE).values(
        "reference", "amount_micro")),
}))
"""


def check_ledger(stack: Stack, outcomes: list[Outcome]) -> dict:
    state = json.loads(stack.manage(LEDGER).strip().splitlines()[-1])
    assert state["balance"] == state["ledger_sum"], state
    assert state["held"] == 0 and state["active_holds"] == 0, state
    usage = {}
    for record in state["usage"]:
        assert record["request_id"] not in usage
        usage[record["request_id"]] = record
    charges: dict[str, list[int]] = {}
    for entry in state["charges"]:
        charges.setdefault(entry["reference"], []).append(entry["amount_micro"])
    # No charge without its usage record, no usage record charged otherwise than once, at its cost.
    assert set(charges) <= set(usage), set(charges) - set(usage)
    for request_id, record in usage.items():
        assert charges.get(request_id, []) == ([-record["cost_micro"]] if record["cost_micro"] else []), record
    assert CREDIT_MICRO - state["balance"] == sum(r["cost_micro"] for r in usage.values()), state["balance"]
    # A 503 charged nothing, except a worker's lost request its completion tokens: no other record (a request no
    # worker took, its queue entry lost with Redis's data, may leave one of no cost).
    with stack.lock:
        explained = stack.answered | {o.request_id for o in stack.sent
                                      if o.status == 200 or o.status == 503 and o.error["code"] == "worker_lost"}
        unclaimed = {o.request_id for o in stack.sent if o.status == 503 and o.error["code"] == "not_claimed"}
    assert all(usage[r]["cost_micro"] == 0 for r in set(usage) & unclaimed), [usage[r] for r in unclaimed & set(usage)]
    assert set(usage) <= explained | unclaimed, [usage[r] for r in set(usage) - explained - unclaimed]
    for o in outcomes:
        if complete(o):  # answered 200: exactly one record, charging exactly the tokens the client was told
            record = usage.get(o.request_id)
            assert record is not None, o
            assert record["status"] == "completed", (o, record)
            assert (record["prompt_tokens"], record["completion_tokens"], record["cached_tokens"]) == (
                o.usage["prompt_tokens"], o.usage["completion_tokens"],
                (o.usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)), (o, record)
            assert record["cost_micro"] == tiny_cost(record["prompt_tokens"], record["completion_tokens"],
                                                     record["cached_tokens"]), record
        elif o.status == 200:  # a stream that ended with an error: not completed, charged as its end says
            record = usage.get(o.request_id)
            if record is None:
                continue
            # Cancelled (the worker stopped it when the web side's lease lapsed): its prompt and what it generated,
            # from the worker's own count; failed (its worker lost): only what it generated.
            expected = {"cancelled": tiny_cost(record["prompt_tokens"], record["completion_tokens"],
                                               record["cached_tokens"]),
                        "failed": 2 * record["completion_tokens"]}
            assert record["status"] in expected and record["cost_micro"] == expected[record["status"]], (o, record)
    return state


def crossed(scenario: Scenario) -> list[Outcome]:
    """The requests sent before the outage and answered in full after it (once the service was being started again:
    a request waiting for it may be answered before its start command returns)."""
    return [o for o in scenario.outcomes
            if o.sent < scenario.down_at and o.answered > scenario.restart_at and complete(o)]


def report(scenario: Scenario, state: dict) -> str:
    answered = [o for o in scenario.outcomes if o.status == 503]
    codes: dict = {}
    for o in answered:
        codes[o.error["code"]] = codes.get(o.error["code"], 0) + 1
    across = len(crossed(scenario))
    return (f"{scenario.name}: {len(scenario.outcomes)} requests, statuses {scenario.statuses}, 503 codes {codes}, "
            f"streams ended by an error event {sum(1 for o in scenario.outcomes if o.status == 200 and o.error)}, "
            f"sent before the outage and answered 200 after it {across}; "
            f"down {scenario.up_at - scenario.down_at:.1f}s, first success {scenario.resumed_after_s:.2f}s after "
            f"the restart; ledger: balance {state['balance']} == ledger sum {state['ledger_sum']}, held "
            f"{state['held']}, {len(state['usage'])} usage records, sweeper {state['swept']}")


# -- the outages --------------------------------------------------------------------------------------------------


def test_postgresql_stopped_and_started_under_load(stack):
    scenario = run_outage(stack, "PostgreSQL", stack.postgres.stop, stack.postgres.start)
    assert_only_answers(scenario, {"database_unavailable"})
    assert stack.web.poll() is None  # the same web process serves again
    # The answers generated while it was down were charged once it was back, then delivered whole.
    assert not [o for o in scenario.outcomes if o.status == 200 and o.error]
    assert scenario.long_under_way >= 1 and len(crossed(scenario)) >= scenario.long_under_way
    state = check_ledger(stack, scenario.outcomes)
    print(report(scenario, state))


def test_redis_killed_and_started_under_load(stack):
    scenario = run_outage(stack, "Redis", stack.redis.stop, stack.redis.start)
    # The rate limiter and the inference queue live in Redis: their own 503s say which failed (a Redis started
    # again knows no worker until the worker's next heartbeat).
    # A request queued just before Redis went lost its queue entry with Redis's data: no worker can take it, and
    # it ends as one no worker took in time (charged nothing).
    assert_only_answers(scenario, {"redis_unavailable", "rate_limiter_unavailable", "model_unavailable",
                                   "worker_lost", "no_worker", "not_claimed"})
    assert stack.web.poll() is None
    state = check_ledger(stack, scenario.outcomes)
    print(report(scenario, state))


# -- every surface, while each is down -----------------------------------------------------------------------------

SIGN_IN = """
from django.test import Client
from accounts.models import Membership, Organization, User
organization = Organization.objects.get(name="outages")
user = User.objects.filter(email="owner@outages.example").first()
if user is None:
    user = User.objects.create_user(email="owner@outages.example", password="a long passphrase 42")
    Membership.objects.create(user=user, organization=organization, role=Membership.Role.OWNER)
client = Client()
client.force_login(user)
session = client.session
session["organization_id"] = organization.pk
session.save()
print(client.cookies["sessionid"].value)
"""


class Playground:
    """The playground's socket as its page opens it (session cookie, the site's Origin)."""

    def __init__(self, stack: Stack, cookie: str):
        from websockets.sync.client import connect

        self.stack = stack
        self._connection = connect(stack.url.replace("http", "ws", 1) + "/ws/playground/", origin=stack.url,
                                   additional_headers={"Cookie": f"sessionid={cookie}"}, open_timeout=30, proxy=None)
        self.ws = self._connection.__enter__()
        assert self.receive()["type"] == "ready"

    def receive(self) -> dict:
        return json.loads(self.ws.recv(timeout=REQUEST_TIMEOUT))

    def turn(self) -> dict:
        """One chat message; the turn's last message (done or error)."""
        self.ws.send(json.dumps({"type": "chat", "model": TINY, "max_tokens": 4,
                                 "messages": [{"role": "user", "content": "Hello there"}]}))
        while True:
            message = self.receive()
            if message["type"] == "done" and "error" not in message:
                with self.stack.lock:
                    self.stack.answered.add(message["request_id"])
            if message["type"] in ("done", "error"):
                return message

    def save(self) -> dict:
        self.ws.send(json.dumps({"type": "save", "model": TINY, "messages": [
            {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}]}))
        return self.receive()

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


def surfaces(stack: Stack, cookie: str) -> dict[str, httpx.Response]:
    """One request to each kind of path: the OpenAI API (whole and streamed), the sessions and billing APIs (Django
    REST framework), a dashboard page."""
    key = {"Authorization": f"Bearer {stack.secret}"}
    chat = {"model": TINY, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT, cookies={"sessionid": cookie}) as http:
        answers = {
            "models": http.get("/v1/models", headers=key),
            "chat": http.post("/v1/chat/completions", headers=key, json=chat),
            "stream": http.post("/v1/chat/completions", headers=key, json={**chat, "stream": True}),
            "sessions API": http.get("/api/sessions", headers=key),
            "billing API": http.get("/api/billing/balance", headers=key),
            "usage page": http.get("/usage/"),
        }
    with stack.lock:
        stack.answered.update(answers[name].headers["x-request-id"] for name in ("chat", "stream")
                              if answers[name].status_code == 200)
    return answers


def assert_unavailable(response: httpx.Response, code: str, *, page: bool = False) -> None:
    assert response.status_code == 503, (response.request.url, response.status_code, response.text[-1500:])
    assert response.headers["Retry-After"] == "5"
    if page:
        assert response.headers["content-type"].startswith("text/html")
        assert "Temporarily unavailable" in response.text and "try again in 5 seconds" in response.text
        return
    error = response.json()["error"]  # a stream refused before its first byte is a JSON error too
    assert error["type"] == "server_error" and error["code"] == code, error
    assert "nothing was charged" in error["message"] and "retry" in error["message"].lower(), error


def test_every_surface_answers_503_while_postgresql_is_down_and_serves_again_after(stack):
    cookie = stack.manage(SIGN_IN).strip().splitlines()[-1]
    page = Playground(stack, cookie)
    try:
        assert page.turn()["type"] == "done"
        stack.postgres.stop()
        try:
            for name, response in surfaces(stack, cookie).items():
                assert_unavailable(response, "database_unavailable", page=name == "usage page")
            refused = page.turn()  # the socket stays open and says why the turn did not run
            assert refused["type"] == "error" and "action" not in refused, refused
            assert (refused["error"]["code"], refused["error"]["status"], refused["error"]["retry_after"]) == (
                "database_unavailable", 503, 5), refused
            saved = page.save()
            assert saved["type"] == "error" and saved["action"] == "save", saved
            assert saved["error"]["code"] == "database_unavailable", saved
        finally:
            stack.postgres.start()
        # The same processes, the same socket: served again.
        for name, response in surfaces(stack, cookie).items():
            assert response.status_code == 200, (name, response.status_code, response.text[:500])
        done = page.turn()
        assert done["type"] == "done" and done["finish_reason"] in ("stop", "length"), done
    finally:
        page.close()
    check_ledger(stack, [])


def test_pages_and_the_playground_while_redis_is_down(stack):
    cookie = stack.manage(SIGN_IN).strip().splitlines()[-1]
    page = Playground(stack, cookie)
    try:
        with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT) as http:
            form = http.get("/accounts/login/")
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
            stack.redis.stop()
            try:
                # The log-in throttle counts attempts in Redis.
                login = http.post("/accounts/login/", data={"username": "owner@outages.example", "password": "x",
                                                            "csrfmiddlewaretoken": csrf},
                                  headers={"Referer": f"{stack.url}/accounts/login/"})
                assert form.status_code == 200
                assert_unavailable(login, "redis_unavailable", page=True)
                refused = page.turn()  # the playground's rate limits live in Redis
                assert refused["type"] == "error" and refused["error"]["status"] == 503, refused
                assert refused["error"]["retry_after"] > 0, refused
            finally:
                stack.redis.start()
        wait_until(lambda: page.turn()["type"] == "done", timeout=REQUEST_TIMEOUT, interval=0.5,
                   message="the playground to answer again once Redis is back")
    finally:
        page.close()
    check_ledger(stack, [])


# -- in this process: the pieces the outage tests above rely on ------------------------------------------------------


class _OneAnswer:
    """A backend whose every request generates two tokens and stops."""

    async def generate(self, spec, request):
        from inference.engine.types import TokenEvent

        await asyncio.sleep(0.2)  # the request's first heartbeat is sent meanwhile (0 tokens)
        yield TokenEvent(request.request_id, text="Hi", completion_tokens=1)
        yield TokenEvent(request.request_id, finished=True, finish_reason="stop", prompt_tokens=10,
                         completion_tokens=2)

    def cancel(self, spec, request_id):
        pass


def _database_down(*args, **kwargs):
    from django.db import OperationalError

    raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")


async def _generate(org, request_id: str):
    """A Generation of request_id on a 10-prompt-token, 20-max-token hold; its final event."""
    from asgiref.sync import sync_to_async

    from inference.chat.generation import Generation
    from inference.engine.types import GenerationRequest, SamplingParams
    from tests.billing.test_holds import place

    hold = await sync_to_async(place)(org, request_id)
    generation = Generation(backend=_OneAnswer(), spec=SimpleNamespace(id="m"), hold=hold, started=time.monotonic(),
                            request=GenerationRequest(request_id, list(range(10)), SamplingParams(max_tokens=20)))
    generation.start()
    while True:
        event = await asyncio.wait_for(generation.events.get(), timeout=30)
        if event.finished:
            return event


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
async def test_a_charge_the_database_cannot_record_is_a_503_and_the_sweeper_releases_its_hold(monkeypatch):
    from datetime import timedelta

    from asgiref.sync import sync_to_async
    from django.conf import settings
    from django.utils import timezone

    from billing import liveness
    from billing.models import Hold, UsageRecord
    from billing.sweeper import sweep_stale_holds
    from inference.chat import generation
    from inference.chat.errors import generation_failed
    from tests.billing.test_holds import state
    from tests.factories import make_org

    org = await sync_to_async(make_org)("outage-org", credit_micro=1000)
    monkeypatch.setattr(generation, "hold_settle", _database_down)
    monkeypatch.setattr(generation, "SETTLE_PATIENCE_S", 0.5)
    final = await _generate(org, "unrecorded")
    assert (final.finish_reason, final.error_code, final.completion_tokens) == ("error", "database_unavailable", 2)
    error = generation_failed(final)  # what the client is answered, before or within its stream
    assert (error.status, error.code, error.headers) == (503, "database_unavailable", {"Retry-After": "5"})
    assert "nothing was charged" in error.message
    # No counts left for the sweeper to charge: it releases the hold once it is stale.
    assert await sync_to_async(liveness.last_counts)("unrecorded") is None

    def swept():
        return sweep_stale_holds(now=timezone.now() + timedelta(seconds=settings.HOLD_STALE_AFTER_S + 1))

    assert await sync_to_async(swept)() == {"settled": 0, "released": 1}
    account = await sync_to_async(state)(org)
    assert (account.balance_micro, account.held_micro) == (1000, 0)
    assert not await UsageRecord.objects.filter(request_id="unrecorded").aexists()
    assert (await Hold.objects.aget(request_id="unrecorded")).status == Hold.Status.RELEASED


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
async def test_a_charge_waits_for_the_database_and_is_recorded_once_when_it_is_back(monkeypatch):
    from asgiref.sync import sync_to_async

    from billing import liveness
    from billing.models import LedgerEntry, UsageRecord
    from inference.chat import generation
    from tests.billing.test_holds import state
    from tests.factories import make_org

    org = await sync_to_async(make_org)("outage-org", credit_micro=1000)
    real, tries = generation.hold_settle, []

    def back_on_the_third_try(**kwargs):
        tries.append(liveness.last_counts(kwargs["hold"].request_id))  # what the sweeper would charge meanwhile
        return _database_down() if len(tries) < 3 else real(**kwargs)

    monkeypatch.setattr(generation, "hold_settle", back_on_the_third_try)
    final = await _generate(org, "recorded")
    assert (final.finish_reason, final.completion_tokens) == ("stop", 2)
    # While it waits, a request dying with its process is charged its final count by the sweeper.
    assert tries == [{"prompt_tokens": 10, "completion_tokens": 0}] + [{"prompt_tokens": 10, "completion_tokens": 2}] * 2
    record = await UsageRecord.objects.aget(request_id="recorded")
    assert (record.status, record.prompt_tokens, record.completion_tokens, record.cost_micro) == (
        "completed", 10, 2, 10 * 1 + 2 * 2)
    assert await LedgerEntry.objects.filter(reference="recorded").acount() == 1
    account = await sync_to_async(state)(org)
    assert (account.balance_micro, account.held_micro) == (1000 - 14, 0)
    assert await sync_to_async(liveness.last_counts)("recorded") is None


def test_what_counts_as_an_outage():
    import psycopg
    import redis
    from django.db import IntegrityError, InterfaceError, OperationalError

    from core.errors import outage_of

    assert outage_of(OperationalError("server closed the connection unexpectedly")) == "database"
    assert outage_of(InterfaceError("connection already closed")) == "database"
    assert outage_of(psycopg.OperationalError("connection refused")) == "database"
    assert outage_of(redis.ConnectionError("Error 111 connecting")) == "redis"
    assert outage_of(redis.TimeoutError("Timeout reading from socket")) == "redis"
    assert outage_of(IntegrityError("duplicate key")) is None
    assert outage_of(redis.ResponseError("WRONGTYPE")) is None
    assert outage_of(ValueError("a bug")) is None
    try:  # raised while handling one: still the outage
        try:
            raise OperationalError("gone")
        except OperationalError:
            raise RuntimeError("a release failed too")
    except RuntimeError as exc:
        assert outage_of(exc) == "database"
    try:  # dealt with (`from None`): not one
        try:
            raise redis.ConnectionError("gone")
        except redis.ConnectionError:
            raise KeyError("x") from None
    except KeyError as exc:
        assert outage_of(exc) is None


@pytest.mark.parametrize("path, api", [("/v1/models", True), ("/api/billing/balance", True), ("/usage/", False)])
def test_the_500_handler_answers_an_outage_raised_outside_a_view_with_a_503(rf, path, api):
    import redis

    from config.views import server_error

    try:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    except redis.ConnectionError:
        response = server_error(rf.get(path))
    assert response.status_code == 503 and response["Retry-After"] == "5"
    if api:
        assert json.loads(response.content)["error"]["code"] == "redis_unavailable"
    else:
        assert b"Temporarily unavailable" in response.content
    assert server_error(rf.get(path)).status_code == 500  # any other failure stays a 500
