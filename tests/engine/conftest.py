import os
import uuid

import pytest

from .helpers import TIMEOUT, Collector

# Belt and braces: nothing in these tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def chat_tokenizer(tiny_model_path):
    from inference.engine.tokenizer import ChatTokenizer

    return ChatTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture(scope="session")
def hf_model(tiny_model_path):
    """transformers' own model, the reference for greedy output."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_path, local_files_only=True).eval()


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    from inference.engine.engine import Engine

    eng = Engine(tiny_model_path, dtype="float32")
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
