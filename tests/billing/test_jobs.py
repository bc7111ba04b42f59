"""The periodic jobs: usage rollups, low-balance alerts, session retention, and the in-process schedule."""
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import ChatSession, Membership, User
from billing.models import BillingProfile, UsageDaily, UsageRecord
from billing.rollups import rollup_day
from billing.services import credit_grant, hold_settle
from billing.tasks.alerts import check_balances
from billing.tasks.rollups import rollup_usage
from config.periodic import PeriodicRunner
from tests.billing.test_holds import place, state
from tests.factories import make_key, make_org

pytestmark = pytest.mark.django_db


def _record(org, key, model, day, hour, prompt, completion, cost, n=[0]):
    n[0] += 1
    return UsageRecord.objects.create(
        organization=org, api_key=key, request_id=f"r{n[0]}", model_id=model, prompt_tokens=prompt,
        completion_tokens=completion, input_micro_per_mtok=1, output_micro_per_mtok=1, cost_micro=cost,
        status="completed", created_at=datetime(2026, 11, day, hour, tzinfo=UTC))


@pytest.mark.money
def test_daily_rollups_sum_usage_per_day_organization_key_and_model():
    alice, bob = make_org("alice"), make_org("bob")
    k1, k2 = make_key(alice, "one")[0], make_key(alice, "two")[0]
    _record(alice, k1, "m1", 20, 1, 10, 5, 100)
    _record(alice, k1, "m1", 20, 23, 20, 5, 200)
    _record(alice, k2, "m1", 20, 12, 1, 1, 7)
    _record(alice, k1, "m2", 20, 12, 3, 3, 30)
    _record(bob, None, "m1", 20, 5, 4, 4, 40)
    _record(alice, k1, "m1", 21, 0, 50, 50, 500)  # the next day
    assert rollup_day(date(2026, 11, 20)) == 4
    rows = {(r.organization.name, r.api_key_id, r.model_id): (r.requests, r.prompt_tokens, r.completion_tokens,
                                                              r.cost_micro)
            for r in UsageDaily.objects.filter(day=date(2026, 11, 20))}
    assert rows == {
        ("alice", k1.pk, "m1"): (2, 30, 10, 300),
        ("alice", k2.pk, "m1"): (1, 1, 1, 7),
        ("alice", k1.pk, "m2"): (1, 3, 3, 30),
        ("bob", None, "m1"): (1, 4, 4, 40),
    }
    # A late record and a second run: the day is rebuilt, not added to twice.
    _record(alice, k2, "m1", 20, 22, 1, 1, 3)
    assert rollup_day(date(2026, 11, 20)) == 4
    assert UsageDaily.objects.get(day=date(2026, 11, 20), api_key=k2).cost_micro == 10
    assert UsageDaily.objects.filter(day=date(2026, 11, 21)).count() == 0


def test_the_rollup_task_covers_today_and_yesterday():
    org = make_org("alice")
    UsageRecord.objects.create(organization=org, request_id="now", model_id="m", prompt_tokens=1,
                               completion_tokens=1, input_micro_per_mtok=1, output_micro_per_mtok=1, cost_micro=9,
                               status="completed")
    today = timezone.now().date()
    assert rollup_usage.delay().get() == {str(today): 1, str(today - timedelta(days=1)): 0}
    assert UsageDaily.objects.get(day=today).cost_micro == 9


def _admin(org, email, role=Membership.Role.OWNER):
    user = User.objects.create_user(email=email, password="x" * 12)
    Membership.objects.create(user=user, organization=org, role=role)
    return user


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_a_low_balance_is_emailed_once_per_crossing_to_owners_and_admins():
    org = make_org("alice", credit_micro=1000)
    _admin(org, "owner@alice.test")
    _admin(org, "admin@alice.test", Membership.Role.ADMIN)
    _admin(org, "member@alice.test", Membership.Role.MEMBER)
    BillingProfile.objects.create(organization=org, low_balance_threshold_micro=500)
    for i in range(4):  # 10 + 2*20 = 50 each, down to 800: still above
        hold_settle(hold=place(org, f"a{i}"), prompt_tokens=10, completion_tokens=20)
    assert mail.outbox == []
    for i in range(8):  # down to 400: crosses once, stays under
        hold_settle(hold=place(org, f"b{i}"), prompt_tokens=10, completion_tokens=20)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert sorted(message.to) == ["admin@alice.test", "owner@alice.test"]
    assert "$0.00" in message.subject and "alice" in message.subject
    credit_grant(organization=org, amount_micro=1000)  # back above: armed again
    hold_settle(hold=place(org, "c"), prompt_tokens=10, completion_tokens=20)
    assert len(mail.outbox) == 1
    for i in range(20):
        hold_settle(hold=place(org, f"d{i}"), prompt_tokens=10, completion_tokens=20)
    assert len(mail.outbox) == 2
    assert state(org).balance_micro == 1400 - 21 * 50


@pytest.mark.django_db(transaction=True)
def test_the_balance_check_catches_a_crossing_made_by_a_new_threshold():
    org = make_org("alice", credit_micro=1000)
    _admin(org, "owner@alice.test")
    BillingProfile.objects.create(organization=org, low_balance_threshold_micro=2000)
    assert check_balances.delay().get() == 1
    assert check_balances.delay().get() == 1
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["owner@alice.test"]


def test_sessions_older_than_their_organizations_retention_are_deleted():
    from accounts.tasks import expire_sessions

    keep, purge = make_org("keep"), make_org("purge")
    purge.session_retention_days = 30
    purge.save()
    old = timezone.now() - timedelta(days=31)
    for org in (keep, purge):
        ChatSession.objects.create(organization=org, title="old", updated_at=old)
        ChatSession.objects.create(organization=org, title="recent")
    assert expire_sessions.delay().get() == 1
    assert sorted(ChatSession.objects.values_list("organization__name", "title")) == [
        ("keep", "old"), ("keep", "recent"), ("purge", "recent")]


def test_the_in_process_schedule_runs_each_job_when_due(monkeypatch):
    now = [1000.0]
    ran = []
    from config.celery import app

    app.loader.import_default_modules()
    monkeypatch.setattr(app.tasks["billing.sweep_holds"], "run", lambda: ran.append("sweep"))
    monkeypatch.setattr(app.tasks["billing.rollup_usage"], "run", lambda: 1 / 0)  # a failing job
    runner = PeriodicRunner({
        "sweep": {"task": "billing.sweep_holds", "schedule": 60.0},
        "rollup": {"task": "billing.rollup_usage", "schedule": 900.0},
    }, clock=lambda: now[0])
    assert runner.run_due() == []
    now[0] += 60
    assert runner.run_due() == ["sweep"] and ran == ["sweep"]
    now[0] += 59
    assert runner.run_due() == []
    now[0] += 900
    assert runner.run_due() == ["sweep", "rollup"]  # the failure is logged; the schedule goes on
    assert ran == ["sweep", "sweep"]


def test_every_scheduled_job_is_a_registered_task(settings):
    from config.celery import app

    app.loader.import_default_modules()
    assert {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} <= set(app.tasks)


class BrokenMailServer:
    """An email backend whose server refuses every message."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        import smtplib

        raise smtplib.SMTPException("451 try again later")


@pytest.mark.money
@pytest.mark.django_db(transaction=True)
def test_a_failing_mail_server_never_fails_the_charge_that_crossed_the_threshold(settings):
    settings.EMAIL_BACKEND = "tests.billing.test_jobs.BrokenMailServer"
    org = make_org("alice", credit_micro=1000)
    _admin(org, "owner@alice.test")
    BillingProfile.objects.create(organization=org, low_balance_threshold_micro=990)
    record = hold_settle(hold=place(org, "crossing"), prompt_tokens=10, completion_tokens=20)
    assert record.cost_micro == 50
    assert state(org).balance_micro == 950
    assert BillingProfile.objects.get(organization=org).low_balance_armed is False  # crossed once, not retried
