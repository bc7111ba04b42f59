"""The money invariants under load, through the live API: many concurrent requests, streams cut anywhere."""
import json
import random
import threading

import httpx
import pytest

from billing.models import Hold, UsageRecord
from billing.selectors import ledger_sum_micro
from billing.services import credit_grant
from tests.api.conftest import TINY, tiny_cost, wait_for_usage
from tests.factories import make_key, make_org
from tests.poll import wait_until

pytestmark = pytest.mark.money

# A prompt shorter than one prefix-cache block (16 tokens): nothing of it is ever served from the cache,
# so every request is charged its full prompt and the counts below are exact.
MESSAGES = [{"role": "user", "content": "Hi"}]
MAX_TOKENS = 4


def _account(org):
    org.credit_account.refresh_from_db()
    return org.credit_account


def test_200_concurrent_requests_against_credit_for_50(base_url, client):
    # ignore_eos: every served request generates exactly max_tokens, so it costs exactly its hold and
    # the balance covers exactly 50 of them, however they interleave.
    body = {"model": TINY, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "ignore_eos": True}
    probe = client.chat.completions.create(model=TINY, messages=MESSAGES, max_tokens=MAX_TOKENS,
                                           extra_body={"ignore_eos": True})
    assert probe.usage.completion_tokens == MAX_TOKENS
    cost = probe.usage.prompt_tokens * 1 + MAX_TOKENS * 2
    dave = make_org("dave")
    credit_grant(organization=dave, amount_micro=50 * cost)
    secret = make_key(dave)[1]
    barrier = threading.Barrier(200, timeout=60)
    statuses: list[int] = []
    codes: list[str] = []
    balances: list[int] = []

    def ask():
        with httpx.Client(base_url=base_url, timeout=120) as http:
            barrier.wait()
            response = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"})
            statuses.append(response.status_code)
            if response.status_code != 200:
                codes.append(response.json()["error"]["code"])

    def watch(stop: threading.Event):
        from django.db import connection

        try:
            while not stop.wait(0.01):
                balances.append(_account(dave).balance_micro)
        finally:
            connection.close()

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    threads = [threading.Thread(target=ask) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()

    assert len(statuses) == 200 and set(statuses) <= {200, 402}
    assert statuses.count(200) == 50
    assert codes == ["insufficient_credit"] * 150
    assert min(balances) >= 0
    account = _account(dave)
    assert account.balance_micro == 0 and account.held_micro == 0
    assert ledger_sum_micro(account=account) == account.balance_micro
    records = UsageRecord.objects.filter(organization=dave)
    assert records.count() == 50 and all(r.cost_micro == cost for r in records)
    assert not Hold.objects.filter(account=account, status=Hold.Status.ACTIVE).exists()


def _cut_stream(base_url: str, secret: str, body: dict, events: int) -> tuple[str, int]:
    """Read `events` SSE data events (or all), then drop the connection; the request id and tokens seen."""
    seen = tokens = 0
    with httpx.Client(base_url=base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {secret}"}) as response:
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    seen += 1
                    choices = json.loads(line[len("data: "):])["choices"]
                    tokens += bool(choices and choices[0]["delta"].get("content"))
                if seen == events:
                    break
    return request_id, tokens


def test_streams_cut_at_random_points_pay_exactly_for_their_tokens(base_url, alice, alice_secret):
    rng = random.Random(20261201)
    max_tokens = 48
    body = {"model": TINY, "messages": MESSAGES, "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    start = _account(alice).balance_micro
    charged = 0
    for _ in range(8):
        events = rng.randint(1, max_tokens + 2)
        request_id, tokens_seen = _cut_stream(base_url, alice_secret, body, events)
        assert tokens_seen > 0 or events == 1  # the first event is the role, then text arrives
        record = wait_for_usage(request_id)
        # The engine's exact count: at least what reached the client, never more than asked for.
        assert tokens_seen <= record.completion_tokens <= max_tokens
        assert record.status == ("completed" if record.completion_tokens == max_tokens else "cancelled")
        assert record.cost_micro == tiny_cost(record.prompt_tokens, record.completion_tokens, record.cached_tokens)
        charged += record.cost_micro
    account = _account(alice)
    assert start - account.balance_micro == charged
    assert account.held_micro == 0
    assert ledger_sum_micro(account=account) == account.balance_micro


def test_a_running_request_beats_for_the_sweeper_until_it_is_settled(base_url, alice, alice_secret):
    from billing import liveness
    body = {"model": TINY, "messages": MESSAGES, "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {alice_secret}"}) as response:
            request_id = response.headers["x-request-id"]
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data: {"))
            # Held credit, and its process says it is running (long enough to be seen: 1500 tokens).
            assert wait_until(lambda: liveness.is_alive(request_id), timeout=5, message="the first heartbeat")
            for _ in lines:
                pass
    assert wait_for_usage(request_id).completion_tokens == 1500
    wait_until(lambda: not liveness.is_alive(request_id) and liveness.last_counts(request_id) is None, timeout=10,
               message="the heartbeat to be forgotten")


def test_settling_leaves_no_database_connection_open(base_url, alice, client):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("counts the database server's connections")

    def open_connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()")
            return cursor.fetchone()[0]

    body = {"model": TINY, "messages": MESSAGES, "max_tokens": 2}
    wait_for_usage(client.chat.completions.create(**body).id)
    before = open_connections()
    for _ in range(10):
        wait_for_usage(client.chat.completions.create(**body).id)
    # Each settlement runs after its response, outside any request: its connection must not linger.
    assert open_connections() <= before + 1
    account = _account(alice)
    assert account.held_micro == 0 and ledger_sum_micro(account=account) == account.balance_micro


def test_requests_still_settle_after_the_database_dropped_the_servers_connections(base_url, alice, client):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs a database server that can drop its clients' connections")
    body = {"model": TINY, "messages": MESSAGES, "max_tokens": 2}
    wait_for_usage(client.chat.completions.create(**body).id)  # the server's threads have connected by now
    with connection.cursor() as cursor:  # a database restart or failover, as the server's threads see it
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    for _ in range(3):
        answer = client.chat.completions.create(**body)
        assert wait_for_usage(answer.id).completion_tokens == answer.usage.completion_tokens
    account = _account(alice)
    assert account.held_micro == 0 and ledger_sum_micro(account=account) == account.balance_micro
