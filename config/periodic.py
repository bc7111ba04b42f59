"""The beat schedule (CELERY_BEAT_SCHEDULE) run on a thread of this process, for the embedded default.

Without Redis there is no Celery worker or beat: the ASGI process runs each periodic task itself, in
order, on one daemon thread, as `celery beat` would queue them. Each task runs in its own database
connection, closed afterwards; a failing task is logged and retried at its next time.
"""
import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

log = logging.getLogger(__name__)


class PeriodicRunner:
    def __init__(self, schedule: dict, *, clock=time.monotonic):
        self.clock = clock
        self.entries = [(name, entry["task"], float(entry["schedule"])) for name, entry in schedule.items()]
        start = clock()
        self.next_at = {name: start + every for name, _, every in self.entries}
        self._tasks_loaded = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_due(self) -> list[str]:
        """Run every task whose time has come; the names of those that ran."""
        from config.celery import app

        if not self._tasks_loaded:
            app.loader.import_default_modules()  # registers the apps' tasks; it also runs Django's checks
            self._tasks_loaded = True
        ran = []
        for name, task, every in self.entries:
            if self.clock() < self.next_at[name]:
                continue
            self.next_at[name] = self.clock() + every
            close_old_connections()
            try:
                app.tasks[task].apply(throw=True)
            except Exception:
                log.exception("periodic task %s failed", task)
            finally:
                close_old_connections()
            ran.append(name)
        return ran

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.run_due()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="periodic-tasks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def start_in_process() -> PeriodicRunner | None:
    if not settings.PERIODIC_IN_PROCESS:
        return None
    runner = PeriodicRunner(settings.CELERY_BEAT_SCHEDULE)
    runner.start()
    return runner
