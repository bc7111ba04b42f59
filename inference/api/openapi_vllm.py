"""The OpenAPI operations of what vLLM's server adds to OpenAI's: /tokenize, /detokenize, and the legacy
POST /v1/completions (whose body shares its parameters with the chat request of inference.api.openapi)."""
from inference.api.openapi import (REQUEST_ID, SCHEMAS, SECURITY_SCHEME, _bool, _errors, _int, _obj,
                                   generation_operation, ref)

_TOKENIZE_REQUEST = {
    "type": "object", "required": ["model"], "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "items": {"type": "object"}, "nullable": True,
                     "description": "A chat, rendered by the model's template as /v1/chat/completions renders it "
                                    "(with `tools`, `documents`, `chat_template_kwargs`, `add_generation_prompt`, "
                                    "`continue_final_message`, `add_special_tokens`, `truncate_prompt_tokens`)."},
        "prompt": {"type": "string", "nullable": True, "description": "Plain text instead of `messages`."},
        "add_special_tokens": _bool("Add the tokenizer's special tokens (for a `prompt`, default true)."),
        "return_token_strs": _bool("Also return each token as the tokenizer writes it."),
        "tools": {"type": "array", "nullable": True, "items": ref("ChatCompletionTool")},
        "tool_choice": ref("ChatCompletionToolChoiceOption"),
        "documents": {"type": "array", "nullable": True, "items": {"type": "object"}},
        "chat_template_kwargs": {"type": "object", "nullable": True, "additionalProperties": True},
        "chat_template_args": {"type": "object", "nullable": True, "additionalProperties": True},
        "reasoning_effort": {"type": "string", "nullable": True},
        "add_generation_prompt": _bool("End the prompt with the assistant header (default true)."),
        "continue_final_message": _bool("Continue the last (assistant) message."),
        "truncate_prompt_tokens": _int("Keep only the last N prompt tokens.", 1),
    },
}
_TOKENIZE_RESPONSE = _obj({
    "count": {"type": "integer"}, "max_model_len": {"type": "integer"},
    "tokens": {"type": "array", "items": {"type": "integer"}},
    "token_strs": {"type": "array", "items": {"type": "string"}, "nullable": True},
}, ["count", "max_model_len", "tokens", "token_strs"])


def _tokenize_operations() -> dict:
    def operation(name: str, summary: str, request: dict, answer: dict) -> dict:
        return {"post": {
            "operationId": name, "summary": summary, "tags": ["tokens"], "security": [{SECURITY_SCHEME: []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {"200": {"description": "Free; counted against the key's requests per minute.",
                                  "headers": REQUEST_ID, "content": {"application/json": {"schema": answer}}},
                          **_errors("400", "401", "403", "404", "429", "503")}}}

    detokenize_request = {"type": "object", "required": ["model", "tokens"], "additionalProperties": False,
                          "properties": {"model": {"type": "string", "minLength": 1},
                                         "tokens": {"type": "array", "items": {"type": "integer", "minimum": 0}}}}
    return {
        "/tokenize": operation("tokenize", "Token ids of a chat or a prompt (vLLM's)", _TOKENIZE_REQUEST,
                               _TOKENIZE_RESPONSE),
        "/detokenize": operation("detokenize", "Text of token ids (vLLM's)", detokenize_request,
                                 _obj({"prompt": {"type": "string"}}, ["prompt"])),
    }


# The parameters a legacy completion shares with a chat completion (documented there).
_SHARED_WITH_CHAT = ("max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop",
                     "presence_penalty", "frequency_penalty", "logit_bias", "seed", "user", "top_k", "min_p",
                     "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids", "include_stop_str_in_output",
                     "skip_special_tokens", "add_special_tokens", "truncate_prompt_tokens", "response_format",
                     "structured_outputs", "guided_json", "guided_regex", "guided_choice", "guided_grammar",
                     "guided_decoding_backend", "metadata", "store", "service_tier", "prompt_logprobs",
                     "return_tokens_as_token_ids", "return_token_ids")


def _completion_request() -> dict:
    chat = SCHEMAS["ChatCompletionRequest"]["properties"]
    ids = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
    properties = {
        "model": chat["model"],
        "prompt": {"oneOf": [{"type": "string", "minLength": 1}, ids,
                             {"type": "array", "minItems": 1, "maxItems": 128,
                              "items": {"type": "string", "minLength": 1}},
                             {"type": "array", "minItems": 1, "maxItems": 128, "items": ids}],
                   "description": "One prompt or several (texts or token id arrays, of one kind), each taken as it "
                                  "is (no chat template) and answered with `n` choices as if sent alone: prompt i's "
                                  "choices are i*n .. i*n + n - 1, at most 128 in all."},
        **{name: chat[name] for name in _SHARED_WITH_CHAT if name in chat},
        "logprobs": _int("Return the logprob of each sampled token and of this many most likely ones.", 0, 20),
        "echo": _bool("Put the prompt before each choice's text; with `logprobs`, its tokens' logprobs (null for the "
                      "first) before the generated ones'."),
        "suffix": {"type": "string", "nullable": True, "enum": ["", None], "description": "Only empty."},
        "best_of": {"type": "integer", "nullable": True, "enum": [1, None], "description": "Only 1."},
    }
    properties["max_tokens"] = _int("Tokens to generate at most (default 16); 0 only with `echo`: the prompt echoed, "
                                    "or scored with `logprobs`, and nothing generated.", 0)
    return {"type": "object", "required": ["model", "prompt"], "additionalProperties": False,
            "properties": properties}


def _completion_response() -> dict:
    legacy_logprobs = _obj({
        "tokens": {"type": "array", "items": {"type": "string"}},
        "token_logprobs": {"type": "array", "items": {"type": "number", "nullable": True}},
        "top_logprobs": {"type": "array", "items": {"type": "object", "nullable": True,
                                                    "additionalProperties": {"type": "number"}}},
        "text_offset": {"type": "array", "items": {"type": "integer"}},
    }, ["tokens", "token_logprobs", "top_logprobs", "text_offset"])
    choice = _obj({"index": {"type": "integer"}, "text": {"type": "string"},
                   "logprobs": {**legacy_logprobs, "nullable": True},
                   "finish_reason": {"type": "string", "nullable": True, "enum": ["stop", "length", None]},
                   "prompt_logprobs": {**ref("PromptLogprobs"), "description": "Only with `prompt_logprobs`."},
                   "prompt_token_ids": {"type": "array", "items": {"type": "integer"},
                                        "description": "Only with `return_token_ids`: this choice's prompt."},
                   "token_ids": {"type": "array", "items": {"type": "integer"},
                                 "description": "Only with `return_token_ids`: the tokens generated."}},
                  ["index", "text", "logprobs", "finish_reason"])
    return _obj({"id": {"type": "string"}, "object": {"type": "string", "enum": ["text_completion"]},
                 "created": {"type": "integer"}, "model": {"type": "string"},
                 "system_fingerprint": {"type": "string"}, "choices": {"type": "array", "items": choice},
                 "usage": {**ref("CompletionUsage"), "nullable": True}},
                ["id", "object", "created", "model", "choices"], closed=False)


def _text_completion_operation(suffix: str) -> dict:
    return generation_operation(
        "createCompletion" + suffix, "Create a completion (legacy)",
        "OpenAI's legacy completions (vLLM's too): raw prompts (one or a list), the same sampling, limits and billing "
        "as a chat completion.", "completions", _completion_request(), _completion_response(),
        "With `stream: true`: server-sent events, each `data: ` and a text_completion object holding the choices' new "
        "text, then `data: [DONE]`.")
