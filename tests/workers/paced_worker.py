"""A real inference worker (inference.queue.worker.Worker, real Redis, the real engine on the tiny test model) whose
model answers at a given pace, like a real model on a CPU: the tiny model alone writes a thousand tokens a second,
which ends a stream before any fault could be injected in the middle of it.

    python -m tests.workers.paced_worker --redis-url URL --model ID --model-path DIR --tokens-per-s 25

With --hang-seed S, a request whose seed is S hangs the engine for good after --hang-after tokens (its thread
waits forever inside the step, as on a stuck device): what --stall-timeout is for.

Django-free, like the worker. SIGTERM drains it, as `manage.py inference_worker`.
"""
import argparse
import logging
import sys
import threading
import time

from inference.queue.worker import Worker, load_engine


class PacedEngine:
    """The engine, its events held back to `tokens_per_s` (the pause is taken in the engine's thread, so every
    step of the batch waits: the model is slower, nothing else changes)."""

    def __init__(self, engine, tokens_per_s: float, hang_seed: int | None = None, hang_after: int = 0):
        self._engine = engine
        self._pause = 1.0 / tokens_per_s
        self._hang_seed, self._hang_after = hang_seed, hang_after

    def submit(self, request, on_event) -> None:
        hangs = self._hang_seed is not None and request.params.seed == self._hang_seed

        def paced(event):
            if not event.finished and event.token_ids:
                time.sleep(self._pause)
            on_event(event)
            if hangs and event.completion_tokens >= self._hang_after:
                hang_forever()

        self._engine.submit(request, paced)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def hang_forever() -> None:
    threading.Event().wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--tokens-per-s", type=float, required=True)
    parser.add_argument("--max-running", type=int, default=1)
    parser.add_argument("--hang-seed", type=int, default=None)
    parser.add_argument("--hang-after", type=int, default=10)
    parser.add_argument("--stall-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.tokens_per_s <= 0:
        parser.error("--tokens-per-s must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    def engine(path, device):
        return PacedEngine(load_engine(path, device, 64 << 20, max_num_seqs=args.max_running, dtype="float32",
                                       attention_backend="sdpa"), args.tokens_per_s, args.hang_seed,
                            args.hang_after)

    return Worker(redis_url=args.redis_url, model_id=args.model, model_path=args.model_path,
                  max_running=args.max_running, engine_factory=engine, stall_timeout_s=args.stall_timeout).run()


if __name__ == "__main__":
    sys.exit(main())
