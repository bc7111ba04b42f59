"""Strict validation of a chat-completions body. Nothing reaches the engine unchecked.

Every failure names the offending parameter the way OpenAI does
(`messages[2].content`). Parameters of the OpenAI surface that this server does
not honour yet are refused unless they carry their neutral value: a request is
never silently answered differently from what it asked.
"""
import json
import math
from dataclasses import dataclass

from inference.api.errors import invalid

ROLES = ("system", "user", "assistant")
MAX_STOP_SEQUENCES = 32
MAX_BODY_MESSAGES = 2048

# Accepted only with the value that changes nothing.
NOT_YET_SUPPORTED = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "tools": ([],),
    "tool_choice": ("none",),
    "parallel_tool_calls": (True, False),
    "response_format": ({"type": "text"},),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": ({},),
}
ACCEPTED = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
    "stream", "stream_options", "user", "metadata", "store",
}


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    max_tokens: int | None = None
    temperature: float | None = None  # None: the model's default
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    user: str | None = None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"'{name}' must be a number between {low} and {high}.", name)
    if not low <= value <= high:
        raise invalid(f"'{name}' is {value}; it must be between {low} and {high}.", name, "invalid_value")
    return float(value)


def _positive_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise invalid(f"'{name}' must be an integer of at least 1.", name, "invalid_value")
    return value


def _messages(value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise invalid("'messages' must be a non-empty array of message objects.", "messages")
    if len(value) > MAX_BODY_MESSAGES:
        raise invalid(f"'messages' has more than {MAX_BODY_MESSAGES} items.", "messages")
    messages = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"'{where}' must be an object with 'role' and 'content'.", where)
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"'{where}.role' must be one of {', '.join(ROLES)}; got {role!r}.", f"{where}.role")
        content = message.get("content")
        if not isinstance(content, str):
            raise invalid(f"'{where}.content' must be a string.", f"{where}.content")
        unknown = set(message) - {"role", "content", "name"}
        if unknown:
            raise invalid(f"'{where}' has unsupported field(s): {', '.join(sorted(unknown))}.", f"{where}")
        messages.append({"role": role, "content": content})
    return messages


def _stop(value) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("'stop' must be a string or an array of strings.", "stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid(f"'stop' may hold at most {MAX_STOP_SEQUENCES} sequences.", "stop")
    if any(s == "" for s in stops):
        raise invalid("'stop' sequences must not be empty.", "stop")
    return tuple(dict.fromkeys(stops))


def _stream_options(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise invalid("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise invalid("'stream_options' must be an object with 'include_usage'.", "stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise invalid("'stream_options.include_usage' must be a boolean.", "stream_options.include_usage")
    return include


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid("We could not parse the JSON body of your request. It must be a JSON object.") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def parse_chat_request(body: dict) -> ChatRequest:
    for name in body:
        if name in NOT_YET_SUPPORTED:
            if body[name] is not None and body[name] not in NOT_YET_SUPPORTED[name]:
                raise invalid(f"'{name}' is not supported by this server yet.", name, "unsupported_parameter")
        elif name not in ACCEPTED:
            raise invalid(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required and must be a string.", "model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean.", "stream")
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not -(2**63) <= seed < 2**64):
        raise invalid("'seed' must be an integer.", "seed")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("'user' must be a string.", "user")

    max_tokens = _positive_int(body, "max_tokens")
    max_completion_tokens = _positive_int(body, "max_completion_tokens")
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        # max_completion_tokens supersedes the deprecated max_tokens.
        max_tokens=max_completion_tokens or max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        stop=_stop(body.get("stop")),
        seed=seed,
        stream=bool(stream),
        include_usage=_stream_options(body, bool(stream)),
        user=user,
    )
