"""Validation of `messages`: every message becomes a plain dict a chat template can use.

Normalised form (see `inference.chat.request.ChatRequest.messages`): {"role", "content"}
plus, where given, "name", "tool_calls" and "tool_call_id". "developer" becomes
"system"; arrays of text parts are joined with newlines; null for an optional
field means "not given".
"""
from inference.chat.errors import invalid
from inference.chat.validate_fields import array, kind, missing, obj, only_keys, show, string

MAX_MESSAGES = 2048
MAX_NAME = 64  # a participant name, as stored with a session message
MAX_TOOL_CALL_ID = 100
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
FIELDS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "refusal", "function_call"},
    "tool": {"role", "content", "tool_call_id", "name"},
}
# Fields that exist, but only on some roles: a clearer message than "unrecognized".
ROLE_OF_FIELD = {"tool_calls": "assistant", "refusal": "assistant", "tool_call_id": "tool"}
# Content parts OpenAI defines that carry something other than text.
NON_TEXT_PARTS = ("image_url", "input_audio", "file")
PART_TEXT_FIELD = {"text": "text", "refusal": "refusal"}


def parse_messages(value) -> list[dict]:
    if value is None:
        raise missing("messages")
    array(value, "messages", min_items=1, max_items=MAX_MESSAGES, what="a non-empty array of message objects")
    return [_message(message, f"messages[{i}]") for i, message in enumerate(value)]


def _message(message, where: str) -> dict:
    obj(message, where, "an object with 'role' and 'content'")
    role = message.get("role")
    if role == "function":
        raise invalid(f"The legacy 'function' role in '{where}' is not supported. Reply to an assistant's "
                      "tool_calls with {\"role\": \"tool\", \"tool_call_id\": ..., \"content\": ...} instead.",
                      f"{where}.role", "unsupported_value")
    if role is None:
        raise missing(f"{where}.role")
    if not isinstance(role, str) or role not in ROLES:
        raise invalid(f"'{where}.role' must be one of {', '.join(ROLES)}; got {show(role)}.", f"{where}.role",
                      "invalid_value")
    role = ROLES[role]
    for key in message:
        if key not in FIELDS[role] and key in ROLE_OF_FIELD and message[key] is not None:
            raise invalid(f"'{where}.{key}' is only allowed on {ROLE_OF_FIELD[key]} messages.", f"{where}.{key}",
                          "invalid_value")
    only_keys(message, where, FIELDS[role] | set(ROLE_OF_FIELD))

    out = {"role": role}
    name = message.get("name")
    if name is not None:
        out["name"] = _label(name, f"{where}.name", MAX_NAME)
    if role == "assistant":
        _assistant(message, where, out)
    else:
        content = message.get("content")
        if content is None:
            raise missing(f"{where}.content")
        out["content"] = _content(content, f"{where}.content", role)
    if role == "tool":
        tool_call_id = message.get("tool_call_id")
        if tool_call_id is None:
            raise missing(f"{where}.tool_call_id")
        out["tool_call_id"] = _label(tool_call_id, f"{where}.tool_call_id", MAX_TOOL_CALL_ID)
    return out


def _label(value, param: str, max_length: int) -> str:
    """A name or an id, kept as it is with a session's messages: no NUL characters."""
    string(value, param, max_length=max_length)
    if "\x00" in value:
        raise invalid(f"'{param}' must not contain NUL characters.", param, "invalid_value")
    return value


def _assistant(message: dict, where: str, out: dict) -> None:
    if message.get("function_call") is not None:
        raise invalid(f"The legacy 'function_call' in '{where}' is not supported; give the call as 'tool_calls': "
                      "[{\"id\": ..., \"type\": \"function\", \"function\": {\"name\": ..., \"arguments\": ...}}].",
                      f"{where}.function_call", "unsupported_parameter")
    tool_calls = message.get("tool_calls")
    calls = [] if tool_calls is None else _tool_calls(tool_calls, f"{where}.tool_calls")
    refusal = message.get("refusal")
    if refusal is not None:
        string(refusal, f"{where}.refusal")
    content = message.get("content")
    if content is not None:
        out["content"] = _content(content, f"{where}.content", "assistant")
    elif calls:
        out["content"] = None
    elif refusal is not None:
        out["content"] = refusal  # what the assistant said, as the template should show it
    else:
        raise invalid(f"'{where}.content' is required unless 'tool_calls' is given.", f"{where}.content",
                      "missing_required_parameter")
    if calls:
        out["tool_calls"] = calls


def _content(value, where: str, role: str) -> str:
    if isinstance(value, str):
        return value
    array(value, where, min_items=1, what="a string or an array of content parts")
    texts = []
    for j, part in enumerate(value):
        at = f"{where}[{j}]"
        obj(part, at, "a content part object such as {\"type\": \"text\", \"text\": ...}")
        part_type = part.get("type")
        if part_type in NON_TEXT_PARTS:
            raise invalid(f"This model accepts text only; '{at}' is a '{part_type}' part. Send the content as "
                          "text parts or a string.", f"{at}.type", "unsupported_content")
        allowed = ("text", "refusal") if role == "assistant" else ("text",)
        if part_type is None:
            raise missing(f"{at}.type")
        if part_type not in allowed:
            listed = " or ".join(f"'{t}'" for t in allowed)
            raise invalid(f"'{at}.type' must be {listed}; got {show(part_type)}.", f"{at}.type", "invalid_value")
        field = PART_TEXT_FIELD[part_type]
        only_keys(part, at, {"type", field})
        text = part.get(field)
        if text is None:
            raise missing(f"{at}.{field}")
        texts.append(string(text, f"{at}.{field}"))
    return "\n".join(texts)


def _tool_calls(value, where: str) -> list[dict]:
    array(value, where, what="an array of tool calls")
    calls = []
    for k, call in enumerate(value):
        at = f"{where}[{k}]"
        obj(call, at, "a tool call object")
        only_keys(call, at, {"id", "type", "function"})
        for key in ("id", "type", "function"):
            if call.get(key) is None:
                raise missing(f"{at}.{key}")
        call_id = string(call["id"], f"{at}.id", max_length=MAX_TOOL_CALL_ID)
        if call["type"] != "function":
            raise invalid(f"'{at}.type' must be 'function'; got {show(call['type'])}.", f"{at}.type",
                          "invalid_value")
        function = obj(call["function"], f"{at}.function")
        only_keys(function, f"{at}.function", {"name", "arguments"})
        for key in ("name", "arguments"):
            if function.get(key) is None:
                raise missing(f"{at}.function.{key}")
        name = string(function["name"], f"{at}.function.name", min_length=1)
        arguments = function["arguments"]
        if not isinstance(arguments, str):
            raise invalid(f"'{at}.function.arguments' must be a string holding JSON (got {kind(arguments)}); "
                          "encode the arguments object with JSON first.", f"{at}.function.arguments",
                          "invalid_type")
        calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return calls
