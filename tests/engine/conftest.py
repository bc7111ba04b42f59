import os
import threading
import uuid

import pytest

# Belt and braces: nothing in these tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TIMEOUT = 30


class Collector:
    """Records one request's events and lets the test wait for its final one."""

    def __init__(self, on_event=None):
        self.events = []
        self.done = threading.Event()
        self._on_event = on_event

    def __call__(self, event):
        self.events.append(event)
        if event.finished:
            self.done.set()
        if self._on_event is not None:
            self._on_event(event)

    def wait(self):
        assert self.done.wait(TIMEOUT), "request never finished"
        return self

    @property
    def final(self):
        finals = [e for e in self.events if e.finished]
        assert len(finals) == 1, f"expected exactly one final event, got {len(finals)}"
        assert self.events[-1] is finals[0], "final event was not the last one"
        return finals[0]

    @property
    def text(self):
        return "".join(e.text for e in self.events)


@pytest.fixture(scope="session")
def chat_tokenizer(tiny_model_path):
    from inference.engine.tokenizer import ChatTokenizer

    return ChatTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture(scope="session")
def runner(tiny_model_path):
    from inference.engine.runner import ModelRunner

    return ModelRunner(tiny_model_path)


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    from inference.engine.engine import Engine

    eng = Engine(tiny_model_path)
    eng.start()
    yield eng
    eng.shutdown(timeout=TIMEOUT)


@pytest.fixture
def prompt_ids(chat_tokenizer):
    return chat_tokenizer.encode_chat([{"role": "user", "content": "What is the capital of France?"}])


@pytest.fixture
def run_request(engine):
    """Submit a request to the shared engine and wait for its final event."""
    from inference.engine.types import GenerationRequest

    def run(prompt_ids, params, on_event=None):
        collector = Collector(on_event)
        engine.submit(GenerationRequest(f"req-{uuid.uuid4().hex[:8]}", list(prompt_ids), params), collector)
        return collector.wait()

    return run
