"""Django-free text generation engine.

Importing this package (or `.types`, `.detokenizer`) does not import torch or
transformers; the heavy names below are resolved on first attribute access,
so API code can use the request/event types cheaply.
"""

from .types import GenerationRequest, SamplingParams, TokenEvent

_LAZY = {
    "Engine": ".engine",
    "ModelRunner": ".model_runner",
    "ChatTokenizer": ".tokenizer",
    "IncrementalDetokenizer": ".detokenizer",
    "convert_gguf": ".convert",
    "default_gguf_path": ".convert",
    "build_tiny_model": ".tiny",
}

__all__ = ["GenerationRequest", "SamplingParams", "TokenEvent", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
