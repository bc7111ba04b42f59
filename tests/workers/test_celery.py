"""The billing jobs on a real Celery worker with a real Redis broker, as a scaled-out deployment runs them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from billing.models import Hold, UsageDaily, UsageRecord
from tests.factories import make_org
from tests.poll import wait_until

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))


@pytest.fixture
def celery_env(redis_url, transactional_db):
    if connection.vendor != "sqlite":
        pytest.skip("the worker shares the test database through its SQLite file")
    return {**os.environ, "REDIS_URL": redis_url, "SECRET_KEY": "test-only", "PERIODIC_IN_PROCESS": "0",
            "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}"}


@pytest.fixture
def celery_worker(celery_env, tmp_path):
    log = open(tmp_path / "celery.log", "wb")
    proc = subprocess.Popen([CELERY, "-A", "config", "worker", "--pool", "solo", "--loglevel", "info"],
                            cwd=ROOT, env=celery_env, stdout=log, stderr=subprocess.STDOUT)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _call(env, task: str) -> None:
    subprocess.run([CELERY, "-A", "config", "call", task], cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=60)


def test_a_celery_worker_runs_the_rollup_and_the_sweeper_queued_through_redis(celery_env, celery_worker):
    org = make_org("alice", credit_micro=1000)
    UsageRecord.objects.create(organization=org, request_id="r1", model_id="m", prompt_tokens=3, completion_tokens=4,
                               input_micro_per_mtok=1, output_micro_per_mtok=1, cost_micro=11, status="completed")
    from core.money import Price
    from billing.services import hold_place

    hold = hold_place(organization=org, api_key=None, request_id="dead", model_id="m", prompt_tokens=1,
                      max_tokens=1, price=Price(1_000_000, 1_000_000))
    Hold.objects.filter(pk=hold.pk).update(created_at=timezone.now() - timezone.timedelta(hours=1))

    _call(celery_env, "billing.rollup_usage")
    _call(celery_env, "billing.sweep_holds")
    wait_until(lambda: UsageDaily.objects.filter(organization=org, cost_micro=11).exists(), timeout=120,
               message="the worker to roll up today's usage")
    wait_until(lambda: Hold.objects.get(pk=hold.pk).status == Hold.Status.RELEASED, timeout=60,
               message="the worker to release the dead request's hold")
    org.credit_account.refresh_from_db()
    assert (org.credit_account.balance_micro, org.credit_account.held_micro) == (1000, 0)
