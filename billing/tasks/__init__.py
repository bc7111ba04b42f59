"""Celery tasks of the billing app (autodiscovered as `billing.tasks`); each module registers its own."""
