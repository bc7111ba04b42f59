import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.catalogue import all_models


class Command(BaseCommand):
    help = (
        "Show the inference workers and queues: per model the live workers (host, pid, device, requests running "
        "of their maximum, context window, draining or accepting, uptime), the requests waiting for a worker and how long the "
        "oldest has waited. Reads the Redis of INFERENCE_QUEUE_URL; the embedded default has no queue."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", action="append", default=None,
                            help="a model id (repeatable; default: every model of the catalogue)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the status as JSON")

    def handle(self, *args, model=None, as_json=False, **options):
        url = getattr(settings, "INFERENCE_QUEUE_URL", None)
        if not url:
            raise CommandError("INFERENCE_QUEUE_URL is not set: requests run on the engine inside each web "
                               "process (the embedded default), there are no workers or queues to show")
        import redis

        from inference.queue.status import model_status

        models = model or sorted(all_models())
        r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            found = [model_status(r, m) for m in models]
        except redis.RedisError as exc:
            raise CommandError(f"Redis at INFERENCE_QUEUE_URL cannot be read: {exc}") from None
        finally:
            r.close()
        if as_json:
            self.stdout.write(json.dumps(found, indent=2))
            return
        for status in found:
            oldest = "" if status["oldest_wait_s"] is None else f", the oldest for {status['oldest_wait_s']} s"
            self.stdout.write(f"{status['model']}: {len(status['workers'])} live worker(s), {status['accepting']} "
                              f"accepting; {status['waiting']} request(s) waiting{oldest}")
            for w in status["workers"]:
                state = "draining" if w.get("draining") else "accepting" if w["accepting"] else "not accepting"
                self.stdout.write(f"  {w.get('worker')}  {w.get('host')} pid {w.get('pid')}  {w.get('device')}  "
                                  f"running {w.get('running')}/{w.get('max_running')}  "
                                  f"window {w.get('context_window')} tokens  {state}  "
                                  f"up {w.get('age_s')} s")

