"""Settings, all read from the environment (see platform/example.env).

With neither DATABASE_URL nor REDIS_URL set the platform runs in its embedded
default: SQLite, an in-process inference worker, in-memory cache and channel
layer, and Celery tasks run eagerly. Setting them switches to PostgreSQL and
Redis without code changes.
"""
import os
import secrets
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_choice, env_float, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var")))

DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
EMBEDDED = DATABASE_URL is None and REDIS_URL is None


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if not EMBEDDED:
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL or REDIS_URL is set")
    # The embedded default keeps a generated key on disk so logins survive restarts.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Where people reach this site (scheme://host[:port]): the links in emails (sign-up, password reset,
# invitations) are built from it, never from the Host header of the request that sends them.
SITE_URL = env_url("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served from here rather than a CDN
    "channels",
    "accounts",
    "billing",
    "inference",
]

MIDDLEWARE = [
    "config.middleware.RequestIdMiddleware",
    "config.metrics.MetricsMiddleware",
    # The database or Redis unreachable during a view: 503 with Retry-After, never a 500.
    "config.middleware.OutageMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# /metrics (Prometheus): with a token, for requests bearing it; without, for clients on this host only.
METRICS_TOKEN = env_str("METRICS_TOKEN")

# Bodies above this size get a 413 from the API (Django refuses to read them).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("API_MAX_BODY_BYTES", 8 << 20, minimum=1024)
# Work a chat request may cause before it is paid for (inference.chat.work, inference.chat.schema_limits):
# characters of prompt to render and tokenize (400 beyond), characters one organization may have being
# tokenized at once in one process (429 beyond), and the size of a request's JSON schemas, response_format
# and tools' parameters together (400 beyond).
API_MAX_PROMPT_CHARS = env_int("API_MAX_PROMPT_CHARS", 1_000_000, minimum=1000)
API_ORG_TOKENIZING_CHARS = env_int("API_ORG_TOKENIZING_CHARS", 2_000_000, minimum=1000)
API_MAX_SCHEMA_BYTES = env_int("API_MAX_SCHEMA_BYTES", 128 << 10, minimum=1024)
API_MAX_SCHEMA_ENUM_VALUES = env_int("API_MAX_SCHEMA_ENUM_VALUES", 1000, minimum=1)
API_MAX_SCHEMA_PROPERTIES = env_int("API_MAX_SCHEMA_PROPERTIES", 1000, minimum=1)
API_MAX_SCHEMA_DEPTH = env_int("API_MAX_SCHEMA_DEPTH", 32, minimum=2)

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.web.context.tenancy",
            ],
        },
    },
]

if DATABASE_URL:
    # A kept connection (DB_CONN_MAX_AGE) is checked before a request reuses it: one that broke while idle (the
    # database restarted) is replaced instead of failing the request.
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
                                                  conn_health_checks=True)}
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            # The in-process worker and the request path write concurrently:
            # wait for the lock instead of failing with "database is locked".
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
            # A file, not memory, so that a live server thread and concurrent
            # writers in the tests share one database with real locking.
            # TEST_DB_NAME lets two test runs share a checkout without sharing a database.
            "TEST": {"NAME": str(DATA_DIR / env_str("TEST_DB_NAME", "test.sqlite3"))},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
# Argon2id at 19 MiB per hash for new passwords; the others, and Argon2 hashes of other parameters, still
# verify (and are upgraded at the next log-in). Each hash takes one of PASSWORD_HASH_CONCURRENCY slots of
# the process (about 19 MiB each); a request that waits PASSWORD_HASH_WAIT seconds for one gets a 429.
PASSWORD_HASHERS = [
    "accounts.hashers.Argon2PasswordHasher",
    "accounts.hashers.PBKDF2PasswordHasher",
    "accounts.hashers.PBKDF2SHA1PasswordHasher",
    "accounts.hashers.ScryptPasswordHasher",
]
PASSWORD_HASH_CONCURRENCY = env_int("PASSWORD_HASH_CONCURRENCY", 2, minimum=1)
PASSWORD_HASH_WAIT = env_float("PASSWORD_HASH_WAIT", 3.0, minimum=0.1, maximum=60.0)
# How many reverse proxies in front of the app append to X-Forwarded-For (0: clients connect directly).
# Login throttling counts failures per client address; behind proxies that address comes from the header.
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0, minimum=0)

# HTTPS only (redirects, HSTS, secure cookies): on by default outside the embedded default, off with DEBUG or
# in the embedded default, so `make run` keeps working over http on loopback. Each can be set on its own.
HTTPS_ONLY = not EMBEDDED and not DEBUG
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS_ONLY)
SECURE_REDIRECT_EXEMPT = [r"^(healthz|health|livez|readyz|metrics)$"]  # load balancers' probes may speak http
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS_ONLY)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS_ONLY)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS_ONLY else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
# Behind TRUSTED_PROXIES that terminate TLS, their X-Forwarded-Proto says whether the client used https.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if TRUSTED_PROXIES else None
# Every page's Content-Security-Policy (django-csp): scripts, styles and connections (the playground's
# WebSocket included) from this site only; no inline scripts, event handlers or styles; no framing.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
    },
}
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    # Room for the log-in throttle's counters (a full cache drops its oldest entries, locks included).
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                          "OPTIONS": {"MAX_ENTRIES": 100_000}}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = REDIS_URL is None
CELERY_TASK_EAGER_PROPAGATES = True
# Periodic jobs (billing/tasks): run by `celery -A config beat` when REDIS_URL is set; in the embedded
# default the ASGI process runs the same schedule on a background thread (PERIODIC_IN_PROCESS).
CELERY_BEAT_SCHEDULE = {
    "sweep-holds": {"task": "billing.sweep_holds", "schedule": 60.0},
    "rollup-usage": {"task": "billing.rollup_usage", "schedule": 15 * 60.0},
    "check-balances": {"task": "billing.check_balances", "schedule": 15 * 60.0},
    "reconcile-stripe": {"task": "billing.reconcile_stripe", "schedule": 30 * 60.0},
    "expire-sessions": {"task": "accounts.expire_sessions", "schedule": 6 * 3600.0},
}
PERIODIC_IN_PROCESS = env_bool("PERIODIC_IN_PROCESS", REDIS_URL is None)

# Email (low-balance and payment alerts, password resets): printed to the console unless SMTP is configured.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "billing@localhost")
# Operators who also receive payment alerts (failed payments, disputes, refund shortfalls).
BILLING_ALERT_EMAILS = env_list("BILLING_ALERT_EMAILS", [])

# Stripe: top-ups through Checkout, auto-recharge off-session, webhooks at /billing/stripe/webhook.
# STRIPE_API_BASE points the official library at another server (a local fake in the tests).
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = env_str("STRIPE_API_BASE")
STRIPE_CURRENCY = "usd"
TOPUP_MIN_USD = env_int("TOPUP_MIN_USD", 5, minimum=1)
TOPUP_MAX_USD = env_int("TOPUP_MAX_USD", 10_000, minimum=1)

# Rate limits of an organization that has none of its own (a key's own limits apply on top).
ORG_RATE_LIMIT_RPM = env_int("ORG_RATE_LIMIT_RPM", 10_000, minimum=1)
ORG_RATE_LIMIT_TPM = env_int("ORG_RATE_LIMIT_TPM", 50_000_000, minimum=1)
# Chat sessions (accounts.storage): the most one stored message, one session and all of an organization's
# sessions may hold (an organization's own quota, set in the admin, wins over the default), and how many
# conversations the playground may save per organization and minute.
CHAT_SESSION_MESSAGE_MAX_BYTES = env_int("CHAT_SESSION_MESSAGE_MAX_BYTES", 256 << 10, minimum=1024)
CHAT_SESSION_MAX_BYTES = env_int("CHAT_SESSION_MAX_BYTES", 1 << 20, minimum=1024)
CHAT_SESSION_QUOTA_BYTES = env_int("CHAT_SESSION_QUOTA_BYTES", 100 << 20, minimum=0)
PLAYGROUND_SAVES_PER_MINUTE = env_int("PLAYGROUND_SAVES_PER_MINUTE", 10, minimum=1)
# Largest WebSocket message the playground reads; give uvicorn the same --ws-max-size (Makefile, Procfile).
PLAYGROUND_WS_MAX_BYTES = env_int("PLAYGROUND_WS_MAX_BYTES", 2 << 20, minimum=1024)
# A hold whose request has sent no heartbeat for this long is settled (or released) by the sweeper.
HOLD_STALE_AFTER_S = env_int("HOLD_STALE_AFTER_S", 120, minimum=10)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# The ASGI app serves STATIC_URL itself (admin CSS, the API docs' Swagger UI), also with DEBUG off,
# so a bare `uvicorn config.asgi:application` needs no web server in front. Turn off when one serves them.
SERVE_STATIC = env_bool("SERVE_STATIC", True)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Failures as OpenAI error objects, like the /v1 endpoints.
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
}

# The OpenAPI document at /api/schema (docs at /api/docs): the DRF views describe themselves,
# the OpenAI-compatible /v1 views are added by inference.api.openapi_hook.
SPECTACULAR_SETTINGS = {
    "TITLE": "LLM platform API",
    "DESCRIPTION": (
        "OpenAI-compatible chat completions (`/v1`, also under `/api/v1`), the server-side chat sessions "
        "of an organization (`/api/sessions`) and its billing (`/api/billing`: balance, ledger, usage, top-ups, "
        "limits, settings). Authenticate with an organization's API key: `Authorization: Bearer sk-...` "
        "(billing changes need a signed-in owner or admin: session cookie, `X-CSRFToken`, `X-Organization`). "
        "Errors are OpenAI error objects: "
        "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "APPEND_COMPONENTS": {"securitySchemes": {"ApiKeyAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An organization's API key (`sk-...`): `Authorization: Bearer KEY` "
                       "(`Authorization: Api-Key KEY` works too).",
    }}},
    "ENUM_NAME_OVERRIDES": {
        "SessionObjectEnum": ["chat.session"],
        "SessionMessageObjectEnum": ["chat.session.message"],
        "ListObjectEnum": ["list"],
    },
    "COMPONENT_SPLIT_PATCH": False,  # a rename must name the title
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "inference.api.openapi_hook.add_openai_endpoints",
    ],
}

# Inference: public model ids are defined in core/catalogue.py; the model
# cache holds converted checkpoints so the server never downloads anything.
MODEL_CACHE_DIR = Path(env_str("MODEL_CACHE_DIR", str(DATA_DIR / "models")))
# The kernels torch.compile makes at an engine's start (the CPU decode step, the attention kernels) are cached
# here, so a restart, even after a reboot, loads them in seconds instead of compiling them again (1-2 minutes on a
# 2-core CPU). torch's own TORCHINDUCTOR_CACHE_DIR, when set, wins.
COMPILE_CACHE_DIR = Path(env_str("TORCHINDUCTOR_CACHE_DIR", str(DATA_DIR / "compile-cache")))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(COMPILE_CACHE_DIR))
MODELS_FILE = env_str("MODELS_FILE")
INFERENCE_DEVICE = env_str("INFERENCE_DEVICE", "cpu")
# Memory the engine reserves for its KV cache on the CPU (in-process, and per worker unless --kv-cache-mb says
# otherwise). On a GPU the cache takes what INFERENCE_GPU_MEMORY_UTILIZATION leaves after the weights.
INFERENCE_KV_CACHE_MB = env_int("INFERENCE_KV_CACHE_MB", 1024, minimum=16)
INFERENCE_GPU_MEMORY_UTILIZATION = env_float("INFERENCE_GPU_MEMORY_UTILIZATION", 0.9, minimum=0.05, maximum=1.0)
# Weights and KV cache precision. auto: bfloat16 on GPUs (float16 on those without bf16); on CPUs with bf16
# instructions bfloat16 activations with int4 weights, elsewhere float32. A model's "dtype" and
# "quantization" in MODELS_FILE win.
INFERENCE_DTYPE = env_choice("INFERENCE_DTYPE", "auto", ("auto", "bfloat16", "float16", "float32"))
# The context window (prompt + completion, in tokens) each engine gives its models: 0 is each model's own
# (max_position_embeddings); a model's "max_model_len" in MODELS_FILE and `inference_worker --max-model-len` win.
INFERENCE_MAX_MODEL_LEN = env_int("INFERENCE_MAX_MODEL_LEN", 0, minimum=0)
INFERENCE_QUANTIZATION = env_choice("INFERENCE_QUANTIZATION", "auto", ("auto", "none", "int8", "int4"))
# Reuse the KV cache of prompt prefixes seen before (a session's earlier turns, a shared system prompt),
# within one organization.
INFERENCE_PREFIX_CACHE = env_bool("INFERENCE_PREFIX_CACHE", True)
# auto: flex_attention on GPUs; on the CPU a compiled paged decode kernel and SDPA for prefills.
# sdpa needs no compiler (the eager reference).
INFERENCE_ATTENTION_BACKEND = env_choice("INFERENCE_ATTENTION_BACKEND", "auto", ("auto", "flex", "inductor", "sdpa"))
# No CUDA graphs for decode steps on GPUs, no compiled decode steps on the CPU (both are made at
# start-up otherwise).
INFERENCE_ENFORCE_EAGER = env_bool("INFERENCE_ENFORCE_EAGER", False)
# CPU, bfloat16 with int4/int8 weights: prefills and decode batches past the int4 kernels' 16 rows run in float32
# (float32 copies of the quantized weights), in bfloat16 (off), or whichever a start-up timing finds faster (auto).
INFERENCE_WIDE_STEPS = env_choice("INFERENCE_WIDE_STEPS", "auto", ("auto", "float32", "off"))
# Dedicated inference workers (`manage.py inference_worker`) fed through Redis Streams: set by
# default whenever REDIS_URL is. Unset (and no REDIS_URL): the engine runs inside the web process.
INFERENCE_QUEUE_URL = env_str("INFERENCE_QUEUE_URL", REDIS_URL)
# Requests waiting for a worker, per model, beyond which new ones get 503 with Retry-After.
INFERENCE_QUEUE_LIMIT = env_int("INFERENCE_QUEUE_LIMIT", 256, minimum=1)
# A grammar (json_schema, forced tool calls) compiles in a child process of the engine, stopped after this
# many seconds: the request ends with a 400 naming the limit.
INFERENCE_GRAMMAR_COMPILE_TIMEOUT_S = env_float("INFERENCE_GRAMMAR_COMPILE_TIMEOUT_S", 10.0, minimum=0.1,
                                                maximum=3600.0)
# An engine whose step has run this many seconds is taken as hung (a stuck device or kernel): an inference worker
# leaves the queue and exits 3 (its requests end as worker_lost) so that its supervisor restarts it, and the
# embedded server's /livez answers 503. 0: never. A step is one batch's forward pass and sampling: a second or
# less for the default model, more for large models on a CPU.
INFERENCE_STALL_TIMEOUT_S = env_float("INFERENCE_STALL_TIMEOUT_S", 120.0, minimum=0.0, maximum=86400.0)
# Warm start: a web process loads what the first request needs (the embedded engine with its warm-up requests,
# or the models' tokenizers) in a background thread as it starts, and /readyz says not ready until it has;
# workers run their warm-up requests before their first heartbeat. 0: everything loads on first use.
INFERENCE_WARM_START = env_bool("INFERENCE_WARM_START", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
