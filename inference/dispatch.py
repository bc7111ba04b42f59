"""The one interface the API uses to reach a model.

tokenizer (the model's ChatTokenizer), check_available (before credit is held),
enqueue (once it is), generate and cancel.

The embedded default runs the engine inside this process (a background thread
per model). With INFERENCE_QUEUE_URL set, requests go through Redis Streams to
dedicated worker processes (`inference.queue`) behind the same calls.
"""
import asyncio
import logging
import threading
from collections.abc import AsyncIterator

from django.conf import settings

from core.catalogue import ModelSpec
from inference.availability import ModelUnavailable

log = logging.getLogger(__name__)


class LocalBackend:
    """Runs one engine per model in this process; events cross threads into asyncio."""

    def __init__(self, device: str = "cpu"):
        self._device = device
        self._engines: dict[str, object] = {}
        self._lock = threading.Lock()

    def _engine(self, spec: ModelSpec):
        # Loading takes seconds: done once, in a worker thread, never on the event loop.
        with self._lock:
            engine = self._engines.get(spec.id)
            if engine is None:
                from inference.engine.config import EngineConfig
                from inference.engine.engine import Engine  # torch is imported only when a model is needed

                try:
                    config = EngineConfig(kv_cache_bytes=settings.INFERENCE_KV_CACHE_MB << 20,
                                          enable_prefix_caching=settings.INFERENCE_PREFIX_CACHE,
                                          grammar_compile_timeout_s=settings.INFERENCE_GRAMMAR_COMPILE_TIMEOUT_S)
                    engine = Engine(str(spec.path), device=self._device, config=config, **spec.engine_options())
                except Exception as exc:
                    log.exception("could not load %s from %s", spec.id, spec.path)
                    raise ModelUnavailable(f"model {spec.id} could not be loaded") from exc
                engine.start()
                self._engines[spec.id] = engine
            return engine

    async def tokenizer(self, spec: ModelSpec):
        """The model's ChatTokenizer (loading the model the first time)."""
        engine = await asyncio.to_thread(self._engine, spec)
        return engine.tokenizer

    async def check_available(self, spec: ModelSpec) -> None:
        """Always available: the engine is in this process (loading failures surface in tokenizer)."""

    async def enqueue(self, spec: ModelSpec, request) -> None:
        """Nothing to queue ahead: generate() submits straight to the engine."""

    async def generate(self, spec: ModelSpec, request) -> AsyncIterator:
        """Token events for the request, ending with exactly one final event."""
        engine = await asyncio.to_thread(self._engine, spec)
        if getattr(request, "constraint", None) is not None:
            # Compiling a grammar takes up to its deadline: never on the event loop (nor the engine thread).
            await asyncio.to_thread(engine.prepare, request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        engine.submit(request, lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
        while True:
            event = await queue.get()
            yield event
            if event.finished:
                return

    def cancel(self, spec: ModelSpec, request_id: str) -> None:
        engine = self._engines.get(spec.id)
        if engine is not None:
            engine.cancel(request_id)

    def shutdown(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.shutdown()
            self._engines.clear()


_backend = None
_queue_backends: dict[str, object] = {}  # one per INFERENCE_QUEUE_URL, so settings can change (tests)
_backends_lock = threading.Lock()


def get_backend():
    global _backend
    url = getattr(settings, "INFERENCE_QUEUE_URL", None)
    with _backends_lock:
        if url:
            backend = _queue_backends.get(url)
            if backend is None:
                from inference.queue.backend import RedisBackend  # redis is imported only when configured

                backend = _queue_backends[url] = RedisBackend(url)
            backend.queue_limit = settings.INFERENCE_QUEUE_LIMIT
            return backend
        if _backend is None:
            _backend = LocalBackend(device=settings.INFERENCE_DEVICE)
        return _backend
