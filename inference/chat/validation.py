"""Strict validation of a chat-completions body. Nothing reaches the engine unchecked.

The server takes the OpenAI surface plus the common vLLM-style extensions (top_k,
min_p, repetition_penalty, stop_token_ids, chat_template_kwargs, ...). Every
failure is a 400 naming the offending parameter the way OpenAI does
(`messages[2].content`, `logit_bias.50256`). Parameters this server cannot honour
are refused unless they carry their neutral value: a request is never silently
answered differently from what it asked. null always means "not given".

Messages live in `validate_messages`, tools and response formats in
`validate_tools`, vLLM's structured outputs in `validate_structured`; checks that need the model (its template, window, vocabulary,
grammar support) happen later, in `inference.chat.prepare`.
"""
import json
import re

from inference.chat.errors import invalid
from inference.chat.request import ChatRequest
from inference.chat.schema_limits import SchemaBudget
from inference.chat.validate_fields import (array, boolean, choice, integer, is_number, missing, number, obj,
                                           only_keys, show, string)
from inference.chat.validate_messages import parse_messages
from inference.chat.validate_structured import parse_structured_outputs
from inference.chat.validate_tools import parse_response_format, parse_tool_choice, parse_tools

__all__ = ["ChatRequest", "parse_body", "parse_chat_request"]

MAX_STOP_SEQUENCES = 32
MAX_STOP_TOKEN_IDS = 64
MAX_LOGIT_BIAS = 300
MAX_N = 128
MAX_TOP_LOGPROBS = 20
MAX_TOKEN_ID = 2**31 - 1
# vLLM only needs > 0; above 2 the penalty wrecks any text, so a larger value is almost surely a mistake.
MAX_REPETITION_PENALTY = 2.0
SEED_RANGE = (-(2**63), 2**64 - 1)  # what the engine's generators take
TOKEN_ID_KEY = re.compile(r"0|[1-9][0-9]{0,9}")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")
# chat_template_kwargs may not override what the request itself says.
RESERVED_TEMPLATE_KWARGS = {"messages", "conversation", "tools", "documents", "add_generation_prompt",
                            "continue_final_message", "chat_template", "tokenize", "return_dict"}
METADATA_LIMITS = (16, 64, 512)  # pairs, key length, value length (as OpenAI)

ACCEPTED = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
    "repetition_penalty", "presence_penalty", "frequency_penalty", "logit_bias", "n", "logprobs", "top_logprobs",
    "seed", "stop", "stop_token_ids", "min_tokens", "include_stop_str_in_output", "skip_special_tokens",
    "ignore_eos", "stream", "stream_options", "user", "metadata", "store", "service_tier", "modalities", "tools",
    "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort", "chat_template_kwargs",
    "chat_template_args", "add_generation_prompt", "continue_final_message", "add_special_tokens", "documents",
    "echo", "truncate_prompt_tokens", "session_id", "structured_outputs", "guided_json", "guided_regex",
    "guided_choice", "guided_grammar", "guided_decoding_backend", "prompt_logprobs", "return_tokens_as_token_ids",
    "return_token_ids",
}
# Accepted only with the value that changes nothing (null is always fine): name -> (neutral values, why not).
NEUTRAL_ONLY = {
    "best_of": ((1,), "only 1 is supported (no best-of sampling)"),
    "use_beam_search": ((False,), "beam search is not supported"),
    "length_penalty": ((1,), "it only applies to beam search, which is not supported"),
    "early_stopping": ((False,), "it only applies to beam search, which is not supported"),
    "bad_words": (([],), "banned words are not supported; use 'logit_bias' with -100 for banned tokens"),
    "bad": (([], ""), "banned words are not supported; use 'logit_bias' with -100 for banned tokens"),
    "bad_token_ids": (([],), "use 'logit_bias' with -100 to ban tokens"),
    "top_p_min": ((0,), "dynamic top_p is not supported"),
    "spaces_between_special_tokens": ((True,), "special tokens are always detokenized with spaces between them"),
    "chat_template": ((), "custom chat templates are refused; the model's own template is used "
                          "(tune it with 'chat_template_kwargs')"),
    "kv_transfer_params": ((), "disaggregated serving is not available"),
    "disaggregated_params": ((), "disaggregated serving is not available"),
    "guided_whitespace_pattern": ((), "JSON is always written compact, without free whitespace"),
}
# Refused whenever given (not null).
UNSUPPORTED = {
    "audio": "audio output is not supported; this server produces text only",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "functions": "the legacy 'functions' parameter is not supported; pass the same definitions as 'tools': "
                 "[{\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": ...}}]",
    "function_call": "the legacy 'function_call' parameter is not supported; use 'tool_choice' with 'tools' "
                     "('none', 'auto', or {\"type\": \"function\", \"function\": {\"name\": ...}})",
}


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw, parse_constant=_no_constant)
        json.dumps(body, ensure_ascii=False).encode()  # lone surrogates ("\ud800") cannot reach a tokenizer
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        raise invalid("We could not parse the JSON body of your request. It must be a JSON object "
                      "in valid UTF-8.") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _same(value, neutral) -> bool:
    """Equal and of the same JSON type (so true is not 1 and 1 is not true)."""
    if isinstance(value, bool) or isinstance(neutral, bool):
        return value is neutral
    if is_number(neutral):
        return is_number(value) and value == neutral
    return type(value) is type(neutral) and value == neutral


def _check_names(body: dict) -> None:
    for name, value in body.items():
        if name in ACCEPTED or value is None and name in NEUTRAL_ONLY.keys() | UNSUPPORTED.keys():
            continue
        if name in UNSUPPORTED:
            raise invalid(f"'{name}' is not supported: {UNSUPPORTED[name]}.", name, "unsupported_parameter")
        if name in NEUTRAL_ONLY:
            neutral, why = NEUTRAL_ONLY[name]
            if any(_same(value, n) for n in neutral):
                continue
            allowed = " or ".join(json.dumps(n) for n in (*neutral, None))
            raise invalid(f"'{name}' is not supported: {why}. Leave it out or set it to {allowed}.", name,
                          "unsupported_parameter")
        raise invalid(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")


def _opt(body: dict, name: str, check, *args, default=None, **kwargs):
    value = body.get(name)
    return default if value is None else check(value, name, *args, **kwargs)


def _logit_bias(value) -> dict[int, float]:
    obj(value, "logit_bias", "an object mapping token ids to biases")
    if len(value) > MAX_LOGIT_BIAS:
        raise invalid(f"'logit_bias' may hold at most {MAX_LOGIT_BIAS} entries; got {len(value)}.", "logit_bias",
                      "invalid_value")
    bias = {}
    for key, weight in value.items():
        param = f"logit_bias.{key}"
        if not TOKEN_ID_KEY.fullmatch(key) or int(key) > MAX_TOKEN_ID:
            raise invalid(f"'logit_bias' keys must be token ids (non-negative integers written as strings); "
                          f"got {show(key)}.", param, "invalid_value")
        bias[int(key)] = number(weight, param, -100, 100)
    return bias


def _stop(value) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("'stop' must be a string or an array of strings.", "stop", "invalid_type")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid(f"'stop' may hold at most {MAX_STOP_SEQUENCES} sequences.", "stop", "invalid_value")
    if any(s == "" for s in stops):
        raise invalid("'stop' sequences must not be empty.", "stop", "invalid_value")
    return tuple(dict.fromkeys(stops))


def _stop_token_ids(value) -> tuple[int, ...]:
    array(value, "stop_token_ids", max_items=MAX_STOP_TOKEN_IDS, what="an array of token ids")
    return tuple(integer(t, f"stop_token_ids[{i}]", 0, MAX_TOKEN_ID) for i, t in enumerate(value))


def _include_usage(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise invalid("'stream_options' is only allowed when 'stream' is true.", "stream_options", "invalid_value")
    obj(options, "stream_options")
    only_keys(options, "stream_options", {"include_usage", "continuous_usage_stats"})
    continuous = options.get("continuous_usage_stats")
    if continuous is not None and boolean(continuous, "stream_options.continuous_usage_stats"):
        raise invalid("'stream_options.continuous_usage_stats' is not supported; usage comes in the final chunk "
                      "with 'include_usage'.", "stream_options.continuous_usage_stats", "unsupported_value")
    include = options.get("include_usage")
    return False if include is None else boolean(include, "stream_options.include_usage")


def _ignored(body: dict) -> None:
    """Parameters accepted for compatibility that change no output: checked, then dropped."""
    metadata = body.get("metadata")
    if metadata is not None:
        pairs, key_length, value_length = METADATA_LIMITS
        obj(metadata, "metadata", "an object of string values")
        if len(metadata) > pairs:
            raise invalid(f"'metadata' may hold at most {pairs} pairs.", "metadata", "invalid_value")
        for key, value in metadata.items():
            if len(key) > key_length:
                raise invalid(f"'metadata' keys must be at most {key_length} characters.", f"metadata.{key}",
                              "invalid_value")
            string(value, f"metadata.{key}", max_length=value_length)
    _opt(body, "store", boolean)
    tier = body.get("service_tier")
    if tier in ("flex", "scale", "priority"):
        raise invalid(f"'service_tier' {tier!r} is not offered; use 'auto' or 'default'.", "service_tier",
                      "unsupported_value")
    _opt(body, "service_tier", choice, ("auto", "default"))
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        unsupported = isinstance(modalities, list) and "audio" in modalities
        raise invalid("'modalities' must be [\"text\"]: this server produces text only.", "modalities",
                      "unsupported_value" if unsupported else "invalid_value")


def _template_kwargs(body: dict) -> dict:
    kwargs, args = body.get("chat_template_kwargs"), body.get("chat_template_args")
    if kwargs is not None and args is not None:
        raise invalid("Give 'chat_template_kwargs' or its alias 'chat_template_args', not both.",
                      "chat_template_args", "invalid_value")
    name = "chat_template_kwargs" if args is None else "chat_template_args"
    value = kwargs if args is None else args
    if value is None:
        return {}
    obj(value, name, "an object of keyword arguments for the chat template")
    for key in value:
        if key in RESERVED_TEMPLATE_KWARGS:
            raise invalid(f"'{name}.{key}' cannot be set through {name}; use the request's own parameter.",
                          f"{name}.{key}", "invalid_value")
    return dict(value)


def _documents(value) -> list[dict]:
    array(value, "documents", what="an array of objects with string values")
    for i, document in enumerate(value):
        obj(document, f"documents[{i}]", "an object with string values")
        for key, text in document.items():
            string(text, f"documents[{i}].{key}")
    return [dict(document) for document in value]


def parse_chat_request(body: dict) -> ChatRequest:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    _check_names(body)
    if body.get("model") is None:
        raise missing("model")
    model = string(body["model"], "model", min_length=1)
    messages = parse_messages(body.get("messages"))

    max_tokens = _opt(body, "max_tokens", integer, 1)
    max_completion_tokens = _opt(body, "max_completion_tokens", integer, 1)
    limit = max_completion_tokens if max_completion_tokens is not None else max_tokens  # the newer name wins
    min_tokens = _opt(body, "min_tokens", integer, 0, default=0)
    if limit is not None and min_tokens > limit:
        raise invalid(f"'min_tokens' ({min_tokens}) must not exceed the maximum number of tokens ({limit}).",
                      "min_tokens", "invalid_value")
    logprobs = _opt(body, "logprobs", boolean, default=False)
    top_logprobs = _opt(body, "top_logprobs", integer, 0, MAX_TOP_LOGPROBS)
    if top_logprobs is not None and not logprobs:
        raise invalid("'top_logprobs' is only allowed when 'logprobs' is true.", "top_logprobs", "invalid_value")
    stream = _opt(body, "stream", boolean, default=False)
    prompt_logprobs = _opt(body, "prompt_logprobs", integer, 0, MAX_TOP_LOGPROBS)
    if prompt_logprobs is not None and stream:
        raise invalid("'prompt_logprobs' is not available with 'stream': true.", "prompt_logprobs",
                      "unsupported_parameter")
    schemas = SchemaBudget()  # response_format and the tools' parameters share the request's schema limits
    tools = _opt(body, "tools", lambda value, _: parse_tools(value, schemas), default=())
    add_generation_prompt = _opt(body, "add_generation_prompt", boolean, default=True)
    continue_final_message = _opt(body, "continue_final_message", boolean, default=False)
    if continue_final_message:
        if add_generation_prompt:
            raise invalid("'continue_final_message' and 'add_generation_prompt' cannot both be true; set "
                          "'add_generation_prompt' to false to continue the final message.",
                          "continue_final_message", "invalid_value")
        if messages[-1]["role"] != "assistant":
            raise invalid("'continue_final_message' needs the last message to be from the assistant.",
                          "continue_final_message", "invalid_value")
    _ignored(body)
    response_format = parse_response_format(body.get("response_format"), schemas)
    structured = parse_structured_outputs(body, schemas)
    if structured is not None and response_format.type != "text":
        raise invalid(f"'{structured.param}' and a 'response_format' of type '{response_format.type}' cannot be "
                      "combined: give one of them.", structured.param, "invalid_value")
    reasoning_effort = body.get("reasoning_effort")
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=limit,
        temperature=_opt(body, "temperature", number, 0, 2),
        top_p=_opt(body, "top_p", number, 0, 1),
        top_k=_opt(body, "top_k", integer, -1),
        min_p=_opt(body, "min_p", number, 0, 1, default=0.0),
        repetition_penalty=_opt(body, "repetition_penalty", number, 0, MAX_REPETITION_PENALTY, low_exclusive=True,
                                default=1.0),
        presence_penalty=_opt(body, "presence_penalty", number, -2, 2, default=0.0),
        frequency_penalty=_opt(body, "frequency_penalty", number, -2, 2, default=0.0),
        logit_bias={} if body.get("logit_bias") is None else _logit_bias(body["logit_bias"]),
        n=_opt(body, "n", integer, 1, MAX_N, default=1),
        logprobs=logprobs,
        top_logprobs=top_logprobs or 0,
        prompt_logprobs=prompt_logprobs,
        return_tokens_as_token_ids=_opt(body, "return_tokens_as_token_ids", boolean, default=False),
        return_token_ids=_opt(body, "return_token_ids", boolean, default=False),
        stop=() if body.get("stop") is None else _stop(body["stop"]),
        stop_token_ids=() if body.get("stop_token_ids") is None else _stop_token_ids(body["stop_token_ids"]),
        include_stop_str_in_output=_opt(body, "include_stop_str_in_output", boolean, default=False),
        skip_special_tokens=_opt(body, "skip_special_tokens", boolean, default=True),
        ignore_eos=_opt(body, "ignore_eos", boolean, default=False),
        min_tokens=min_tokens,
        seed=_opt(body, "seed", integer, *SEED_RANGE),
        stream=stream,
        include_usage=_include_usage(body, stream),
        user=_opt(body, "user", string),
        tools=tools,
        tool_choice=parse_tool_choice(body.get("tool_choice"), tools),
        parallel_tool_calls=_opt(body, "parallel_tool_calls", boolean, default=True),
        response_format=response_format,
        structured=structured,
        reasoning_effort=None if reasoning_effort is None else choice(reasoning_effort, "reasoning_effort",
                                                                      REASONING_EFFORTS),
        chat_template_kwargs=_template_kwargs(body),
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        add_special_tokens=_opt(body, "add_special_tokens", boolean, default=False),
        documents=_opt(body, "documents", lambda value, _: _documents(value)),
        echo=_opt(body, "echo", boolean, default=False),
        truncate_prompt_tokens=_opt(body, "truncate_prompt_tokens", integer, 1),
        session_id=_opt(body, "session_id", string, min_length=1, max_length=64),
    )
