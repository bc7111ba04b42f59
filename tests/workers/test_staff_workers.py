"""/staff/workers/: the operators' page of the inference workers and queues (what `manage.py inference_status`
prints), for staff only."""
import re
from html import unescape

import pytest
from django.test import Client

from accounts.models import User
from inference.queue import protocol
from tests.api.conftest import TINY

pytestmark = pytest.mark.django_db

PAGE = "/staff/workers/"


def text(response) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", response.content.decode())))


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ops@example.com", "pw", is_staff=True))
    return client


def test_staff_see_the_live_workers_of_each_model_and_its_queue(staff, workers, worker_pool, rds):
    ghost = "tiny-chat-greedy"  # in the catalogue, no worker serves it here
    rds.delete(protocol.requests_key(ghost))
    rds.xadd(protocol.requests_key(ghost), {"request": "{}"})
    try:
        response = staff.get(PAGE)
    finally:
        rds.delete(protocol.requests_key(ghost))
    assert response.status_code == 200
    page = text(response)
    assert "<h1>Workers</h1>" in response.content.decode()
    assert f"{TINY} 2 live workers, 2 accepting; 0 requests waiting" in page
    for proc in workers:  # one row each: its id, host, pid, device, load and state
        beat = worker_pool.heartbeats()[proc.pid]
        assert re.search(rf"{re.escape(beat['worker'])} {re.escape(beat['host'])} {proc.pid} cpu "
                         rf"\d+ / {beat['max_running']} accepting \d", page), page
    assert f"{ghost} 0 live workers, 0 accepting; 1 request waiting, the oldest for" in page
    assert "No live worker serves this model: its requests wait until one starts." in page
    assert 'href="/staff/billing/"' in response.content.decode()


@pytest.mark.parametrize("customer", [False, True], ids=["anonymous", "not-staff"])
def test_anonymous_visitors_and_customers_are_sent_to_the_admin_login(customer):
    client = Client()
    if customer:
        client.force_login(User.objects.create_user("customer@example.com", "pw"))
    response = client.get(PAGE)
    assert response.status_code == 302 and response.url.startswith("/admin/login/?next=")


def test_without_a_queue_the_page_says_the_engine_runs_in_the_web_process(staff, settings):
    settings.INFERENCE_QUEUE_URL = None
    response = staff.get(PAGE)
    assert response.status_code == 200
    page = text(response)
    assert "The engine runs in the web process (the embedded default)" in page
    assert "live worker" not in page


def test_an_unreachable_queue_is_a_clear_503(staff, settings):
    settings.INFERENCE_QUEUE_URL = "redis://127.0.0.1:1/0"
    response = staff.get(PAGE)
    assert response.status_code == 503
    assert "The queue's Redis (INFERENCE_QUEUE_URL) cannot be read" in text(response)


def test_the_staff_billing_page_links_here(staff):
    from django.contrib.auth.models import Permission

    user = User.objects.get(email="ops@example.com")
    user.user_permissions.add(Permission.objects.get(codename="view_ledgerentry"))
    response = staff.get("/staff/billing/")
    assert response.status_code == 200 and f'href="{PAGE}"' in response.content.decode()
    assert staff.get("/staff/workers").status_code == 301  # the address without its slash leads here too
