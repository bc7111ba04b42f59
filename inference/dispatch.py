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
import time
from collections.abc import AsyncIterator
from functools import partial

from django.conf import settings

from core.catalogue import ModelSpec, all_models, get_model, served_models
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
                                          max_model_len=spec.context_limit,
                                          enable_prefix_caching=settings.INFERENCE_PREFIX_CACHE,
                                          wide_steps=settings.INFERENCE_WIDE_STEPS,
                                          grammar_compile_timeout_s=settings.INFERENCE_GRAMMAR_COMPILE_TIMEOUT_S)
                    engine = Engine(str(spec.path), device=self._device, config=config, compile_in_background=True,
                                    **spec.engine_options())
                except Exception as exc:
                    log.exception("could not load %s from %s", spec.id, spec.path)
                    raise ModelUnavailable(f"model {spec.id} could not be loaded") from exc
                engine.start()
                self._engines[spec.id] = engine
            return engine

    async def tokenizer(self, spec: ModelSpec):
        """The model's ChatTokenizer (loading the model the first time, or waiting for the warm start loading it)."""
        engine = await asyncio.to_thread(self._engine, spec)
        return engine.tokenizer

    async def context_window(self, spec: ModelSpec, tokenizer) -> int:
        """The window requests are checked against: the engine's (its tokenizer says it)."""
        return tokenizer.context_window

    async def served_window(self, spec: ModelSpec) -> int | None:
        """The window GET /v1/models reports, loading nothing: the loaded engine's, else the one it would get."""
        engine = self._engines.get(spec.id)
        return engine.tokenizer.context_window if engine is not None else spec.declared_window

    def warm_up(self, spec: ModelSpec) -> None:
        """Load the model's engine and run its warm-up requests (blocking: the warm start's thread calls it)."""
        engine = self._engine(spec)
        try:
            engine.warm_up()
        except Exception as exc:
            raise ModelUnavailable(f"model {spec.id} failed its warm-up: {exc}") from exc

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

    def compiling(self) -> list[str]:
        """The models whose engine is compiling its decode step in the background (serving eager meanwhile)."""
        return [model_id for model_id, engine in list(self._engines.items()) if engine.stats().get("compiling")]

    def stalled(self) -> list[str]:
        """The models whose engine has run one step for INFERENCE_STALL_TIMEOUT_S (hung: /livez fails), logging
        where each engine's thread is."""
        limit = settings.INFERENCE_STALL_TIMEOUT_S
        stalled = []
        for model_id, engine in list(self._engines.items()):
            seconds = engine.stalled_for() if hasattr(engine, "stalled_for") else 0.0
            if limit and seconds >= limit:
                log.critical("the engine of %s has run one step for %.0f s (INFERENCE_STALL_TIMEOUT_S %g): it "
                             "hangs. Its thread:\n%s", model_id, seconds, limit, engine.thread_stack())
                stalled.append(model_id)
        return stalled

    def cancel(self, spec: ModelSpec, request_id: str) -> None:
        engine = self._engines.get(spec.id)
        if engine is not None:
            engine.cancel(request_id)

    def shutdown(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.shutdown()
            self._engines.clear()


async def listed_models() -> list[ModelSpec]:
    """The catalogue's models this host answers with (GET /v1/models): those it is prepared for
    (core.catalogue.served_models), and with the worker queue those a live worker serves though this host has
    none of their files (a request for one is told which files the web host lacks, never that the model is
    unknown)."""
    prepared = served_models()
    backend = get_backend()
    missing = [spec for spec in all_models().values() if spec not in prepared]
    published = set()
    if missing and hasattr(backend, "published"):
        try:
            published = await backend.published([spec.id for spec in missing])
        except ModelUnavailable:  # the queue is unreachable: the models prepared here are still worth listing
            pass
    return [spec for spec in all_models().values() if spec in prepared or spec.id in published]


async def find_model(model_id: str) -> ModelSpec | None:
    """The listed model of this id (see listed_models), or None; ModelUnavailable when only the queue, unreachable,
    could say whether its workers serve it."""
    spec = get_model(model_id)
    if spec is None or spec.is_prepared:
        return spec
    backend = get_backend()
    if hasattr(backend, "published") and spec.id in await backend.published([spec.id]):
        return spec
    return None


class WarmStart:
    """What this process loads before it says it is ready (/readyz), in one background thread: the URLconf and the
    views it imports, then for each model this host is prepared for what its first request would otherwise wait
    for: in the embedded default the engine (weights, compiled kernels, warm-up requests), with the worker queue
    the tokenizer. A request arriving meanwhile waits for what it needs (each backend loads a model once, under a
    lock), never fails for it. INFERENCE_WARM_START=0: nothing is loaded ahead, the first request loads it."""

    def __init__(self):
        backend = get_backend()
        kind = "engine" if isinstance(backend, LocalBackend) else "tokenizer"
        self._steps = [("urls", _load_urls)] + [(f"{kind} {spec.id}", partial(backend.warm_up, spec))
                                                for spec in served_models()]
        self._state = {name: "loading" for name, _ in self._steps}  # all named before the thread starts
        self._lock = threading.Lock()
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, name="warm-start", daemon=True)

    def state(self) -> dict[str, str]:
        """Each step's state: "loading" (or waiting for its turn), "ready", or "failed: why"."""
        with self._lock:
            return dict(self._state)

    def _run(self) -> None:
        from django.db import connections

        try:
            for name, step in self._steps:
                started = time.monotonic()
                try:
                    step()
                except Exception as exc:
                    log.exception("warm start: %s failed", name)
                    outcome = f"failed: {exc}"
                else:
                    outcome = "ready"
                    log.info("warm start: %s ready in %.1f s", name, time.monotonic() - started)
                with self._lock:
                    self._state[name] = outcome
        finally:
            connections.close_all()  # this thread's, if a step opened one
            self.finished.set()


def _load_urls() -> None:
    from django.urls import get_resolver

    get_resolver().resolve("/v1/chat/completions")  # imports the URLconf, every view and what they import


_warm_start: WarmStart | None = None
_warm_start_lock = threading.Lock()


def start_warm_start() -> WarmStart | None:
    """Start this process's warm start once (config.asgi does, as the application is created); None when
    INFERENCE_WARM_START is off."""
    global _warm_start
    if not settings.INFERENCE_WARM_START:
        return None
    with _warm_start_lock:
        if _warm_start is None:
            _warm_start = WarmStart()
            _warm_start.thread.start()
        return _warm_start


def warm_start() -> WarmStart | None:
    """The warm start this process began, if any (for /readyz)."""
    return _warm_start


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
