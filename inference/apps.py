from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing import final_counts

        # The hold sweeper charges a request whose following process died what its worker counted.
        final_counts.register(worker_final_counts)


def worker_final_counts(request_ids: list[str]) -> dict[str, dict]:
    """billing's final count source: the counts the inference workers recorded for requests whose final event
    no API process read (with the worker queue; the in-process engine dies with the process, counts included)."""
    from inference.dispatch import get_backend

    read = getattr(get_backend(), "final_counts", None)
    return read(request_ids) if read is not None else {}
