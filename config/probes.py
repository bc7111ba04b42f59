"""Probes for load balancers and orchestrators.

/livez   the process answers: no dependency is consulted, so a database outage never restarts it. 503 (status
         "stalled", naming the models) when an engine in this process (the embedded default) has run one step for
         INFERENCE_STALL_TIMEOUT_S: a hung device or kernel, which only a restart ends.
/readyz  it can serve: the database answers, Redis too when configured, with the worker queue
         (INFERENCE_QUEUE_URL) every served model has at least one live worker taking requests, and the warm
         start (inference.dispatch.WarmStart) has loaded what the first request needs. 503 with the failed checks
         named otherwise; while only the warm start is still loading, status "loading" and the check
         "warm_start" names each part and its state. Ready or not, "compiling" lists the models whose engine here
         still compiles its CPU decode step in the background (they answer meanwhile, more slowly).
"""
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import JsonResponse

TIMEOUT_S = 2.0


async def healthz(request):
    """The older probe, kept for existing load balancers: the database answers."""
    state = await sync_to_async(_database)()
    if state == "ok":
        return JsonResponse({"status": "ok"})
    return JsonResponse({"status": "error", "database": "unreachable"}, status=503)


async def livez(request):
    from inference.dispatch import get_backend

    stalled = getattr(get_backend(), "stalled", list)()
    if stalled:
        return JsonResponse({"status": "stalled", "stalled": stalled}, status=503)
    return JsonResponse({"status": "ok"})


async def readyz(request):
    checks = {"database": await sync_to_async(_database)()}
    if settings.REDIS_URL:
        checks["redis"] = await sync_to_async(_redis, thread_sensitive=False)(settings.REDIS_URL)
    queue = getattr(settings, "INFERENCE_QUEUE_URL", None)
    if queue:
        checks["workers"] = await sync_to_async(_workers, thread_sensitive=False)(queue)
    from inference.dispatch import warm_start

    warming = warm_start()
    if warming is not None:
        checks["warm_start"] = warming.state()
    failed = sorted(name for name, result in checks.items() if not _ok(result))
    loading = failed == ["warm_start"] and "loading" in checks["warm_start"].values() and \
        all(state in ("ready", "loading") for state in checks["warm_start"].values())
    body = {"status": "loading" if loading else "error" if failed else "ok", "checks": checks}
    compiling = _compiling()
    if compiling:  # ready, though these models decode eager until their compiled step is ready
        body["compiling"] = compiling
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)


def _compiling() -> list[str]:
    from inference.dispatch import get_backend

    return getattr(get_backend(), "compiling", list)()


def _ok(result) -> bool:
    if isinstance(result, str):
        return result == "ok"
    # {model: live workers} or {warm start part: state}
    return bool(result) and all(n == "ready" if isinstance(n, str) else n > 0 for n in result.values())


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except DatabaseError as exc:
        return f"unreachable: {type(exc).__name__}"


def _redis(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        client.ping()
        return "ok"
    except redis.RedisError as exc:
        return f"unreachable: {type(exc).__name__}"
    finally:
        client.close()


def _workers(url: str) -> dict | str:
    """Live workers taking requests, per served model (listed, and its files present)."""
    import redis

    from inference.queue.status import model_status
    from core.catalogue import served_models

    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        return {model_id: model_status(client, model_id)["accepting"] for model_id in sorted(spec.id for spec in served_models())}
    except redis.RedisError as exc:
        return f"unreachable: {type(exc).__name__}"
    finally:
        client.close()
