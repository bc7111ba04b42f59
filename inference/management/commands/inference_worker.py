import sys
from functools import partial

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.catalogue import DTYPES, QUANTIZATIONS, all_models, get_model
from inference.queue.protocol import HEARTBEAT_INTERVAL_S, HEARTBEAT_TTL_MS


class Command(BaseCommand):
    help = (
        "Run a dedicated inference worker: load one model on one device and serve the requests the API "
        "puts on the model's Redis stream (INFERENCE_QUEUE_URL, which defaults to REDIS_URL). Run one "
        "process per model and device; any number of them may serve the same model. The worker announces "
        f"itself with a heartbeat ({HEARTBEAT_TTL_MS} ms TTL, refreshed every {HEARTBEAT_INTERVAL_S} s) once its "
        "model is loaded and has run its warm-up requests (INFERENCE_WARM_START=0: loaded only); "
        "the API answers 503 with Retry-After while no worker serves a model. SIGTERM or Ctrl-C drains: "
        "no new requests are taken, running ones finish, then the process exits 0 (a second signal cancels "
        "the running requests, a third exits at once). A worker whose engine hangs in one step for --stall-timeout "
        "seconds logs where, leaves the queue (its running requests end as worker_lost) and exits 3."
    )

    requires_system_checks = []  # a worker serves no URLs or admin: start as fast as possible

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, metavar="ID",
                            help="public model id to serve (see GET /v1/models, MODELS_FILE)")
        parser.add_argument("--device", default=None, metavar="DEVICE",
                            help="torch device, e.g. cuda:0 or cpu (default: the INFERENCE_DEVICE setting)")
        parser.add_argument("--kv-cache-mb", type=int, default=None, metavar="MB",
                            help="memory for the KV cache (default: on a GPU, what --gpu-memory-utilization leaves "
                                 "after the weights and a profiling step; on the CPU, the INFERENCE_KV_CACHE_MB "
                                 "setting); the worker logs how many tokens fit")
        parser.add_argument("--gpu-memory-utilization", type=float, default=None, metavar="F",
                            help="share of the GPU's memory this worker may use, 0-1 (default: the "
                                 "INFERENCE_GPU_MEMORY_UTILIZATION setting, 0.9)")
        parser.add_argument("--dtype", choices=DTYPES, default=None,
                            help="weights and KV cache precision (default: the model's dtype in MODELS_FILE, else "
                                 "the INFERENCE_DTYPE setting; auto: bfloat16 on GPUs that support it, float16 on "
                                 "older ones, bfloat16 with int4 weights on CPUs with AVX2, AVX-512 or bf16 "
                                 "instructions, float32 on others)")
        parser.add_argument("--quantization", choices=QUANTIZATIONS, default=None,
                            help="weight-only int8 or int4 linear layers, int4 on the CPU only (default: the "
                                 "model's quantization in MODELS_FILE, else INFERENCE_QUANTIZATION; auto: int4 on "
                                 "the CPU with bfloat16, none on GPUs)")
        parser.add_argument("--attention-backend", choices=("auto", "flex", "inductor", "sdpa"), default=None,
                            help="paged attention kernels (default: INFERENCE_ATTENTION_BACKEND; auto: "
                                 "flex_attention on GPUs, a compiled decode kernel and SDPA prefills on the CPU)")
        parser.add_argument("--enforce-eager", action="store_true", default=None,
                            help="no CUDA graphs for decode steps on GPUs, no compiled decode steps on the "
                                 "CPU (default: both made at start-up; on the CPU, the first time on a machine, "
                                 "decode steps run eager while a child process compiles them)")
        parser.add_argument("--wide-steps", choices=("auto", "float32", "off"), default=None,
                            help="on the CPU in bfloat16 with int4/int8 weights: run prefills and decode batches "
                                 "past the int4 kernels' 16 rows in float32 (float32 copies of the weights: more "
                                 "memory), in bfloat16 (off), or whichever a start-up timing of this CPU finds "
                                 "faster (auto; default: the INFERENCE_WIDE_STEPS setting)")
        parser.add_argument("--max-model-len", type=int, default=None, metavar="TOKENS",
                            help="context window, prompt and completion together (default: the model's "
                                 "max_model_len in MODELS_FILE, else INFERENCE_MAX_MODEL_LEN, else the model's own "
                                 "window; lowered to what the KV cache holds); the API learns it from the "
                                 "heartbeats")
        parser.add_argument("--no-prefix-cache", action="store_true",
                            help="compute every prompt in full (default: reuse the KV cache of prefixes seen "
                                 "before, within one organization)")
        parser.add_argument("--max-running", type=int, default=64, metavar="N",
                            help="take new requests only while fewer than N run on this worker, and batch up to "
                                 "N sequences per step (default: 64)")
        parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                            help="serve Prometheus metrics on this port (/metrics), from start-up: ready (0 while "
                                 "the model loads and warms up), running and waiting sequences, KV cache blocks, "
                                 "prefix-cache hits, generated tokens, preemptions, queue depth (default: none)")
        parser.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                            help="address for --metrics-port (default: 127.0.0.1; 0.0.0.0 for a remote Prometheus)")
        parser.add_argument("--stall-timeout", type=float, default=None, metavar="SECONDS",
                            help="a step of the engine running longer is taken as a hung device or kernel: the "
                                 "worker logs the engine thread's stack, leaves the queue and exits 3 for its "
                                 "supervisor to restart it; 0: never (default: the INFERENCE_STALL_TIMEOUT_S "
                                 "setting, 120)")
        parser.add_argument("--worker-id", default=None, metavar="NAME",
                            help="name in heartbeats and logs (default: host-pid-random; must be unique)")

    def handle(self, *args, model, device, max_running, worker_id, kv_cache_mb, gpu_memory_utilization, dtype,
               quantization, attention_backend, enforce_eager, no_prefix_cache, metrics_port, metrics_addr,
               max_model_len, stall_timeout, wide_steps, **options):
        url = getattr(settings, "INFERENCE_QUEUE_URL", None)
        if not url:
            raise CommandError("No inference queue is configured: set INFERENCE_QUEUE_URL (or REDIS_URL).")
        if max_running < 1:
            raise CommandError("--max-running must be at least 1.")
        if metrics_port is not None and not 0 < metrics_port < 65536:
            raise CommandError("--metrics-port must be a port number, 1 to 65535.")
        if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
            raise CommandError("--gpu-memory-utilization must be in (0, 1].")
        if max_model_len is not None and max_model_len < 1:
            raise CommandError("--max-model-len must be at least 1.")
        if stall_timeout is not None and not 0 <= stall_timeout <= 86400:
            raise CommandError("--stall-timeout must be 0 (never) to 86400 seconds.")
        spec = get_model(model)
        if spec is None:
            known = ", ".join(sorted(all_models())) or "none"
            raise CommandError(f"Unknown model {model!r}. Known models: {known}.")
        if not spec.has_weights:  # a worker runs the model: tokenizer files alone (a web host's) do not do
            raise CommandError(
                f"Model {model!r} is not prepared: no checkpoint with weights in {spec.path} "
                "(run `manage.py prepare_model` for the default model, without --tokenizer-only, or fix its path "
                "in MODELS_FILE)."
            )
        from inference.queue.worker import load_engine, run_worker  # Django-free; torch is imported when the model loads

        if kv_cache_mb is not None and kv_cache_mb < 16:
            raise CommandError("--kv-cache-mb must be at least 16.")
        device = device or settings.INFERENCE_DEVICE
        if kv_cache_mb is None and not device.startswith("cuda"):
            kv_cache_mb = settings.INFERENCE_KV_CACHE_MB
        options = spec.engine_options()
        for key, value in (("dtype", dtype), ("quantization", quantization), ("attention_backend", attention_backend),
                           ("enforce_eager", enforce_eager), ("gpu_memory_utilization", gpu_memory_utilization)):
            if value is not None:
                options[key] = value
        grammar_timeout = settings.INFERENCE_GRAMMAR_COMPILE_TIMEOUT_S  # compiles past it are stopped
        status = run_worker(redis_url=url, model_id=spec.id, model_path=str(spec.path), device=device,
                            max_running=max_running, worker_id=worker_id, metrics_port=metrics_port,
                            metrics_addr=metrics_addr, warm_up=settings.INFERENCE_WARM_START,
                            stall_timeout_s=settings.INFERENCE_STALL_TIMEOUT_S if stall_timeout is None
                            else stall_timeout,
                            engine_factory=partial(load_engine, kv_cache_bytes=None if kv_cache_mb is None
                                                   else kv_cache_mb << 20, max_num_seqs=max_running,
                                                   enable_prefix_caching=settings.INFERENCE_PREFIX_CACHE
                                                   and not no_prefix_cache,
                                                   grammar_compile_timeout_s=grammar_timeout,
                                                   wide_steps=wide_steps or settings.INFERENCE_WIDE_STEPS,
                                                   max_model_len=max_model_len or spec.context_limit, **options))
        if status:
            sys.exit(status)
