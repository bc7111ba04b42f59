"""A worker's Prometheus metrics, read at scrape time from the engine and the queue (`--metrics-port`).

Django-free like the worker. Every family carries the labels model and worker.
"""
from __future__ import annotations

import logging

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("inference.queue.worker")

GAUGES = {  # engine stats key -> (name, help)
    "running": ("inference_worker_running_sequences", "Sequences in the running batch"),
    "waiting": ("inference_worker_waiting_sequences", "Sequences admitted to the engine, waiting for memory or a slot"),
    "kv_blocks_total": ("inference_worker_kv_cache_blocks", "KV cache blocks in all"),
    "kv_blocks_free": ("inference_worker_kv_cache_free_blocks",
                       "KV cache blocks free (prefix-cached blocks nobody holds count as free)"),
    "kv_block_size": ("inference_worker_kv_cache_block_tokens", "Tokens per KV cache block"),
    "compiling": ("inference_worker_compiling", "1 while the compiled CPU decode step compiles in a child process "
                  "(decode steps run eager meanwhile)"),
}
COUNTERS = {
    "generated_tokens": ("inference_worker_generated_tokens", "Tokens generated (rate: tokens per second)"),
    "steps": ("inference_worker_steps", "Engine steps run"),
    "preemptions": ("inference_worker_preemptions", "Sequences preempted to free KV cache memory"),
    "prefix_queried_tokens": ("inference_worker_prefix_cache_queried_tokens",
                              "Prompt tokens looked up in the prefix cache"),
    "prefix_hit_tokens": ("inference_worker_prefix_cache_hit_tokens",
                          "Prompt tokens found in the prefix cache (hit rate: this rate over the queried one)"),
}


class WorkerCollector:
    def __init__(self, worker):
        self.worker = worker

    def collect(self):
        w = self.worker
        labels = ["model", "worker"]
        values = [w.model_id, w.worker_id]

        def gauge(name, doc, value):
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(values, value)
            return family

        engine = w._engine
        stats = engine.stats() if engine is not None and hasattr(engine, "stats") else {}
        for key, (name, doc) in GAUGES.items():
            if key in stats:
                yield gauge(name, doc, stats[key])
        for key, (name, doc) in COUNTERS.items():
            if key in stats:
                family = CounterMetricFamily(name, doc, labels=labels)
                family.add_metric(values, stats[key])
                yield family
        with w._cond:
            inflight = len(w._inflight)
        yield gauge("inference_worker_requests_in_flight", "Requests this worker has claimed and not yet finished",
                    inflight)
        yield gauge("inference_worker_ready", "1 once the model is loaded and warmed up (the first heartbeat follows); "
                    "0 while it loads", int(getattr(w, "ready", False)))
        yield gauge("inference_worker_max_running", "Requests this worker takes at most at once", w.max_running)
        yield gauge("inference_worker_draining", "1 while the worker drains (takes no new requests)",
                    int(w._draining.is_set()))
        try:
            depth = w._redis.xlen(w._requests_key) if w._redis is not None else None
        except redis.RedisError:
            depth = None
        if depth is not None:
            yield gauge("inference_queue_waiting_requests", "Requests on the model's queue waiting for a worker",
                        depth)


def serve_metrics(worker, port: int, addr: str) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(worker))
    start_http_server(port, addr=addr, registry=registry)
    log.info("metrics on http://%s:%d/metrics", addr, port)
