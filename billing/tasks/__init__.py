"""Celery tasks of the billing app (autodiscovered as `billing.tasks`); each module registers its own."""
from billing.tasks import alerts, holds, rollups  # noqa: F401
from billing.tasks import payments  # noqa: F401
