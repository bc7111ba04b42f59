import sys
from functools import partial

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.queue.protocol import HEARTBEAT_INTERVAL_S, HEARTBEAT_TTL_MS
from inference.registry import all_models, get_model


class Command(BaseCommand):
    help = (
        "Run a dedicated inference worker: load one model on one device and serve the requests the API "
        "puts on the model's Redis stream (INFERENCE_QUEUE_URL, which defaults to REDIS_URL). Run one "
        "process per model and device; any number of them may serve the same model. The worker announces "
        f"itself with a heartbeat ({HEARTBEAT_TTL_MS} ms TTL, refreshed every {HEARTBEAT_INTERVAL_S} s); "
        "the API answers 503 with Retry-After while no worker serves a model. SIGTERM or Ctrl-C drains: "
        "no new requests are taken, running ones finish, then the process exits 0 (a second signal cancels "
        "the running requests, a third exits at once)."
    )

    requires_system_checks = []  # a worker serves no URLs or admin: start as fast as possible

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, metavar="ID",
                            help="public model id to serve (see GET /v1/models, MODELS_FILE)")
        parser.add_argument("--device", default=None, metavar="DEVICE",
                            help="torch device, e.g. cuda:0 or cpu (default: the INFERENCE_DEVICE setting)")
        parser.add_argument("--kv-cache-mb", type=int, default=None, metavar="MB",
                            help="memory for the KV cache (default: the INFERENCE_KV_CACHE_MB setting)")
        parser.add_argument("--max-running", type=int, default=64, metavar="N",
                            help="take new requests only while fewer than N run on this worker (default: 64)")
        parser.add_argument("--worker-id", default=None, metavar="NAME",
                            help="name in heartbeats and logs (default: host-pid-random; must be unique)")

    def handle(self, *args, model, device, max_running, worker_id, kv_cache_mb, **options):
        url = getattr(settings, "INFERENCE_QUEUE_URL", None)
        if not url:
            raise CommandError("No inference queue is configured: set INFERENCE_QUEUE_URL (or REDIS_URL).")
        if max_running < 1:
            raise CommandError("--max-running must be at least 1.")
        spec = get_model(model)
        if spec is None:
            known = ", ".join(sorted(all_models())) or "none"
            raise CommandError(f"Unknown model {model!r}. Known models: {known}.")
        if not spec.is_prepared:
            raise CommandError(
                f"Model {model!r} is not prepared: no checkpoint in {spec.path} "
                "(run `manage.py prepare_model` for the default model, or fix its path in MODELS_FILE)."
            )
        from inference.queue.worker import load_engine, run_worker  # Django-free; torch is imported when the model loads

        kv_cache_mb = kv_cache_mb or settings.INFERENCE_KV_CACHE_MB
        if kv_cache_mb < 16:
            raise CommandError("--kv-cache-mb must be at least 16.")

        status = run_worker(redis_url=url, model_id=spec.id, model_path=str(spec.path),
                            device=device or settings.INFERENCE_DEVICE, max_running=max_running,
                            worker_id=worker_id,
                            engine_factory=partial(load_engine, kv_cache_bytes=kv_cache_mb << 20))
        if status:
            sys.exit(status)
