"""The operators' worker and queue page (/staff/workers/): what `manage.py inference_status` prints, for staff.

Per model of the catalogue: the live workers (from their heartbeats: host, pid, device, requests running of their
maximum, accepting or draining, uptime), the requests waiting for a worker and how long the oldest has waited. It
reads the Redis of INFERENCE_QUEUE_URL; in the embedded default the engine runs inside each web process and there
is no queue to show. The staff billing page links here by URL (billing imports nothing of inference).
"""
import redis
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from core.catalogue import all_models
from inference.queue.status import model_status

REFRESH_S = 10


@staff_member_required(login_url="admin:login")
@require_GET
def workers_page(request):
    url = getattr(settings, "INFERENCE_QUEUE_URL", None)
    context = {"queue": bool(url), "models": [], "error": "", "refresh_s": REFRESH_S}
    status = 200
    if url:
        try:
            context["models"] = [_shown(found) for found in _statuses(url)]
        except redis.RedisError as exc:
            context["error"] = f"The queue's Redis (INFERENCE_QUEUE_URL) cannot be read: {exc}"
            status = 503
    return render(request, "inference/staff/workers.html", context, status=status)


def _statuses(url: str) -> list[dict]:
    r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return [model_status(r, model_id) for model_id in sorted(all_models())]
    finally:
        r.close()


def _shown(found: dict) -> dict:
    workers = []
    for w in found["workers"]:
        state = "draining" if w.get("draining") else "accepting" if w.get("accepting") else "not accepting"
        workers.append({
            "worker": w.get("worker", ""), "host": w.get("host", ""), "pid": w.get("pid", ""),
            "device": w.get("device", ""), "running": w.get("running", 0), "max_running": w.get("max_running", ""),
            "state": state, "up": duration(w.get("age_s")),
        })
    return {"model": found["model"], "workers": workers, "accepting": found["accepting"], "waiting": found["waiting"],
            "oldest_wait": duration(found["oldest_wait_s"])}


def duration(seconds: float | None) -> str:
    """'' for none; '4.2 s', '3 min 05 s', '2 h 07 min', '3 d 04 h'."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"
