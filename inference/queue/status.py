"""What the queue looks like now, per model: live workers (from their heartbeats), requests waiting, the oldest one's age.

Django-free like the rest of the queue: `manage.py inference_status` prints it.
"""
from __future__ import annotations

import json
import time

import redis

from inference.queue import protocol as p


def model_status(r: redis.Redis, model_id: str) -> dict:
    """{"model", "waiting", "oldest_wait_s", "accepting", "workers": [heartbeat, ...]} of one model."""
    pattern = p.heartbeat_key(model_id, "*")
    workers = []
    for key in r.scan_iter(match=pattern, count=200):
        raw = r.get(key)
        if raw:
            info = json.loads(raw)
            info["age_s"] = round(time.time() - info["started"], 1) if info.get("started") else None
            workers.append(info)
    workers.sort(key=lambda w: w.get("worker", ""))
    accepting = set(_text(w) for w in r.zrange(p.workers_key(model_id), 0, -1))
    for info in workers:
        info["accepting"] = info.get("worker") in accepting and not info.get("draining")
    waiting = r.xlen(p.requests_key(model_id))
    oldest = None
    if waiting:
        first = r.xrange(p.requests_key(model_id), count=1)
        if first:
            seconds, micros = r.time()
            entered_ms = int(_text(first[0][0]).split("-")[0])  # stream ids start with Redis' clock in ms
            oldest = max(0.0, round((seconds * 1000 + micros / 1000 - entered_ms) / 1000, 1))
    return {"model": model_id, "waiting": waiting, "oldest_wait_s": oldest,
            "accepting": sum(1 for w in workers if w["accepting"]), "workers": workers}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
