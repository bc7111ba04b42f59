"""Tools in the prompt: messages prepared for a chat template.

A template that knows tools gets the tools as they are and assistant tool calls with
their arguments as objects (templates write them with `tojson`). A template that
does not (SmolLM2's plain ChatML, for one) gets the conversation rewritten in the
Hermes format: a tool system prompt, assistant calls as <tool_call> blocks and tool
results as <tool_response> blocks in a user turn.
"""

from __future__ import annotations

from .calls import HERMES_CLOSE, HERMES_OPEN, arguments_object, dumps

HERMES_TOOLS_PROMPT = (
    "# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n'
    "</tool_call>"
)


def has_tool_turns(messages: list[dict]) -> bool:
    return any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def hermes_tools_prompt(tools: list[dict]) -> str:
    return HERMES_TOOLS_PROMPT.format(tools="\n".join(dumps(t) for t in tools))


def hermes_call_text(name: str, arguments) -> str:
    """One call as a Hermes model writes it (and as the tool call grammar produces it)."""
    body = dumps({"name": name, "arguments": arguments_object(arguments)})
    return f"{HERMES_OPEN}\n{body}\n{HERMES_CLOSE}"


def native_tool_messages(messages: list[dict]) -> list[dict]:
    """Copies of the messages with assistant call arguments as objects, for templates that render tools."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_call_with_object_arguments(c) for c in calls]}
        out.append(message)
    return out


def _call_with_object_arguments(call: dict) -> dict:
    function = call.get("function")
    if isinstance(function, dict) and "arguments" in function:
        return {**call, "function": {**function, "arguments": arguments_object(function["arguments"])}}
    return call


def hermes_fallback_messages(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """The conversation in plain user/assistant/system turns, tools and calls written out as Hermes text."""
    out: list[dict] = []
    previous_was_tool = False
    for message in messages:
        role = message.get("role")
        if role == "tool":
            block = f"<tool_response>\n{_text(message.get('content'))}\n</tool_response>"
            if previous_was_tool:
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
            previous_was_tool = True
            continue
        previous_was_tool = False
        rewritten = {k: v for k, v in message.items() if k not in ("tool_calls", "tool_call_id")}
        parts = [_text(message.get("content"))]
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            parts.append(hermes_call_text(function.get("name", ""), function.get("arguments")))
        rewritten["content"] = "\n".join(p for p in parts if p)
        out.append(rewritten)
    if tools:
        prompt = hermes_tools_prompt(tools)
        if out and out[0].get("role") == "system":
            system = out[0]["content"]
            out[0] = {**out[0], "content": f"{system}\n\n{prompt}" if system else prompt}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return dumps(content)
