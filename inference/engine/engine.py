"""A one-request-at-a-time generation engine on a single background thread.

Callers submit requests from any thread; the engine thread runs them in FIFO
order and reports progress through per-request callbacks.  Every request gets
exactly one final event, whatever happens, because billing and streaming
clients both rely on it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .detokenizer import IncrementalDetokenizer
from .runner import ModelRunner
from .tokenizer import ChatTokenizer
from .types import (
    FINISH_CANCELLED,
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    GenerationRequest,
    TokenEvent,
)

logger = logging.getLogger(__name__)

EventCallback = Callable[[TokenEvent], None]


@dataclass(eq=False)
class _Job:
    request: GenerationRequest
    on_event: EventCallback
    cancelled: bool = False
    completion_tokens: int = 0


class Engine:
    def __init__(self, model_path: str, *, device: str = "cpu", dtype: str = "float32") -> None:
        self.tokenizer = ChatTokenizer.from_pretrained(model_path)
        self.runner = ModelRunner(model_path, device=device, dtype=dtype)
        self._cond = threading.Condition()
        self._pending: deque[_Job] = deque()
        self._running: _Job | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- public API (any thread) ------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("engine has been shut down")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="inference-engine", daemon=True)
            self._thread.start()

    def submit(self, request: GenerationRequest, on_event: EventCallback) -> None:
        with self._cond:
            if self._stopping:
                # No thread left to deliver a final event, so refuse loudly.
                raise RuntimeError("engine has been shut down")
            self._pending.append(_Job(request, on_event))
            self._cond.notify()

    def cancel(self, request_id: str) -> None:
        with self._cond:
            for job in self._pending:
                if job.request.request_id == request_id:
                    job.cancelled = True
            if self._running is not None and self._running.request.request_id == request_id:
                self._running.cancelled = True

    def shutdown(self, timeout: float | None = None) -> None:
        with self._cond:
            self._stopping = True
            thread = self._thread
            self._cond.notify_all()
        if thread is None:
            # Never started: nobody else will ever finish what was queued.
            self._finish_pending(lambda job: True)
        elif thread is not threading.current_thread():
            thread.join(timeout)

    # -- engine thread ----------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    break
                job = self._pending.popleft()
                self._running = job
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running = None
        self._finish_pending(lambda job: True)

    def _run(self, job: _Job) -> None:
        error = None
        try:
            reason = self._generate(job)
        except Exception as exc:  # the model, the tokenizer, bad input: all end the request, not the thread
            logger.exception("request %s failed", job.request.request_id)
            reason, error = FINISH_ERROR, f"{type(exc).__name__}: {exc}"
        self._emit(job, finished=True, finish_reason=reason, error=error)

    def _generate(self, job: _Job) -> str:
        request = job.request
        params = request.params
        prompt = request.prompt_token_ids
        if self._interrupted(job):
            return FINISH_CANCELLED
        # Past the window the model has no positions left, so a request that
        # asks for more simply ends there with "length".
        budget = min(params.max_tokens, self.tokenizer.context_window - len(prompt))
        eos_ids = self.tokenizer.eos_token_ids
        detok = IncrementalDetokenizer(self.tokenizer.decode, params.stop, context_ids=prompt)
        reason = FINISH_LENGTH
        steps = self.runner.stream(prompt, params, max(budget, 0))
        try:
            for token in steps:
                job.completion_tokens += 1
                if token in eos_ids:
                    reason = FINISH_STOP
                    break
                delta = detok.push(token)
                if delta:
                    self._emit(job, text=delta)
                if detok.stopped:
                    reason = FINISH_STOP
                    break
                self._finish_pending(lambda j: j.cancelled)
                if self._interrupted(job):
                    reason = FINISH_CANCELLED
                    break
        finally:
            steps.close()  # drops the KV cache now rather than at garbage collection
        # Text held back as a possible stop-string start (or a trailing partial
        # character) was really generated; release it before the final event.
        tail = detok.flush()
        if tail:
            self._emit(job, text=tail)
        return reason

    def _interrupted(self, job: _Job) -> bool:
        with self._cond:
            return job.cancelled or self._stopping

    def _finish_pending(self, select: Callable[[_Job], bool]) -> None:
        """Give selected queued jobs their final "cancelled" event."""
        with self._cond:
            if not any(select(j) for j in self._pending):
                return
            done = [j for j in self._pending if select(j)]
            self._pending = deque(j for j in self._pending if not select(j))
        for job in done:  # outside the lock: callbacks may call back into us
            self._emit(job, finished=True, finish_reason=FINISH_CANCELLED)

    def _emit(self, job: _Job, **fields) -> None:
        event = TokenEvent(
            request_id=job.request.request_id,
            prompt_tokens=len(job.request.prompt_token_ids),
            completion_tokens=job.completion_tokens,
            **fields,
        )
        try:
            job.on_event(event)
        except Exception:
            logger.exception("on_event callback failed for request %s", job.request.request_id)
