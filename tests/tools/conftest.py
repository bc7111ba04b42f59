import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"offset_hours": {"type": "integer", "minimum": -12, "maximum": 14}},
            "required": ["offset_hours"],
        },
    },
}
TOOLS = [WEATHER, CLOCK]


@pytest.fixture(scope="session")
def tool_model_paths(tmp_path_factory) -> dict[str, str]:
    """Tiny models with each chat template: "chatml" (no tool support), "hermes" and "llama3"."""
    from inference.engine.tiny import build_tiny_model

    return {
        name: str(build_tiny_model(tmp_path_factory.mktemp(f"tiny-{name}"), chat_template=name))
        for name in ("chatml", "hermes", "llama3")
    }


@pytest.fixture(scope="session")
def tokenizers(tool_model_paths):
    from inference.engine.tokenizer import ChatTokenizer

    return {name: ChatTokenizer.from_pretrained(path) for name, path in tool_model_paths.items()}
