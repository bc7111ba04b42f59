"""Validation of a legacy completions body (POST /v1/completions, OpenAI's and vLLM's) into a ChatRequest with a
raw `prompt` and no messages.

One prompt or several, as text or token ids ("p", ["p", "q"], [1, 2], [[1, 2], [3]]), each answered with `n`
choices as if sent alone (prompt i's choices are i*n .. i*n + n - 1, as OpenAI numbers them), at most MAX_N choices
in all; the sampling, stopping, length and structured-output parameters are the chat completion's, checked by the
same code (inference.chat.validation).
`logprobs` is the number of most likely tokens to return beside each sampled one (0 to 20), `echo` puts the
prompt before each choice's text (with `logprobs`, its tokens' logprobs before the generated ones'), and
`max_tokens` defaults to 16, as OpenAI's and vLLM's do; 0 with `echo` generates nothing: the prompt echoed, or
scored with `logprobs`. vLLM's `prompt_logprobs` gives the prompt's logprobs in its own shape.
"""
import dataclasses

from inference.chat.errors import invalid
from inference.chat.request import ChatRequest
from inference.chat.validate_fields import array, boolean, integer, is_int, kind
from inference.chat.validation import MAX_N, MAX_TOP_LOGPROBS, parse_chat_request

DEFAULT_MAX_TOKENS = 16
# What only a chat completion takes: refused here, naming the parameter to use instead.
CHAT_ONLY = {
    "messages": "'prompt'", "tools": None, "tool_choice": None, "parallel_tool_calls": None, "functions": None,
    "function_call": None, "session_id": None, "chat_template_kwargs": None, "chat_template_args": None,
    "documents": None, "add_generation_prompt": None, "continue_final_message": None, "reasoning_effort": None,
    "top_logprobs": "'logprobs' (a number of tokens)", "max_completion_tokens": "'max_tokens'",
    "modalities": None, "audio": None, "prediction": None, "web_search_options": None, "chat_template": None,
}


def parse_completion_request(body: dict) -> ChatRequest:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    for name, value in body.items():
        if name in CHAT_ONLY and value is not None:
            instead = f"; use {CHAT_ONLY[name]}" if CHAT_ONLY[name] else ""
            raise invalid(f"'{name}' belongs to /v1/chat/completions, not to /v1/completions{instead}.", name,
                          "unknown_parameter")
    if body.get("suffix") not in (None, ""):
        raise invalid("'suffix' is not supported: text is only generated after the prompt.", "suffix",
                      "unsupported_parameter")
    prompts = _prompts(body.get("prompt"))
    logprobs = body.get("logprobs")
    if logprobs is not None:
        logprobs = integer(logprobs, "logprobs", 0, MAX_TOP_LOGPROBS)
    echo = body.get("echo") is not None and boolean(body["echo"], "echo")
    nothing = is_int(body.get("max_tokens")) and body["max_tokens"] == 0
    if nothing and not echo:
        raise invalid("'max_tokens' must be at least 1; 0 is only allowed with 'echo': true (the prompt echoed, or "
                      "scored with 'logprobs', and nothing generated).", "max_tokens", "invalid_value")
    chat_body = {name: value for name, value in body.items() if name not in ("prompt", "logprobs", "echo", "suffix")}
    chat_body["messages"] = [{"role": "user", "content": "-"}]  # stands for the prompt while the rest is checked
    chat_body["logprobs"] = logprobs is not None
    chat_body["top_logprobs"] = logprobs or None
    if chat_body.get("max_tokens") is None or nothing:
        chat_body["max_tokens"] = 1 if nothing else DEFAULT_MAX_TOKENS
    if chat_body.get("add_special_tokens") is None:
        chat_body["add_special_tokens"] = True  # a raw prompt gets the tokenizer's special tokens, as vLLM's does
    chat = parse_chat_request(chat_body)
    if nothing and chat.n > 1:
        raise invalid("'n' must be 1 when 'max_tokens' is 0: every choice would be the same echoed prompt.", "n",
                      "invalid_value")
    if len(prompts) * chat.n > MAX_N:
        raise invalid(f"{len(prompts)} prompts with 'n' {chat.n} would make {len(prompts) * chat.n} choices; at most "
                      f"{MAX_N} are allowed in one request.", "prompt", "invalid_value")
    return dataclasses.replace(chat, messages=[], prompts=prompts, echo=echo,
                               max_tokens=0 if nothing else chat.max_tokens)


def _prompts(value) -> tuple[str | tuple[int, ...], ...]:
    if value is None:
        raise invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if isinstance(value, list) and value and all(isinstance(item, (str, list)) for item in value):
        if len(value) > MAX_N:
            raise invalid(f"'prompt' holds {len(value)} prompts; at most {MAX_N} are allowed in one request.",
                          "prompt", "invalid_value")
        if len({type(item) for item in value}) > 1:
            raise invalid("'prompt' mixes texts and token id arrays; send prompts of one kind.", "prompt",
                          "invalid_type")
        return tuple(_prompt_value(item, f"prompt[{i}]") for i, item in enumerate(value))
    return (_prompt_value(value, "prompt"),)


def _prompt_value(value, param: str) -> str | tuple[int, ...]:
    if isinstance(value, str):
        if not value:
            raise invalid("'prompt' must not be empty.", param, "invalid_value")
        return value
    if isinstance(value, list):
        ids = array(value, param, min_items=1, what="text or an array of token ids")
        for i, token in enumerate(ids):
            if not is_int(token):
                raise invalid(f"'{param}[{i}]' must be a token id (an integer); got {kind(token)}.", f"{param}[{i}]",
                              "invalid_type")
            integer(token, f"{param}[{i}]", 0)
        return tuple(ids)
    raise invalid(f"'{param}' must be text or an array of token ids; got {kind(value)}.", param, "invalid_type")
