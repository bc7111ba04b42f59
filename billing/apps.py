from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing import signals  # noqa: F401  (connects the receivers)
        from billing import tasks  # noqa: F401  (registers the tasks by name in every process: triggers queue them)
