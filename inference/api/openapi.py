"""OpenAPI description of the OpenAI-compatible endpoints, which are plain Django views.

drf-spectacular describes the DRF views (/api/sessions) by itself; `openapi_hook.add_openai_endpoints`,
one of its postprocessing hooks, adds POST /v1/chat/completions and GET /v1/models[/{model}]
(and their /api/v1 aliases) from the hand-written schemas below. They follow
`inference.chat.request.ChatRequest`, the validated request, parameter by parameter.
"""

from accounts.auth import SECURITY_SCHEME

PREFIXES = (("/v1", ""), ("/api/v1", "ViaApiPrefix"))

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict, description: str | None = None) -> dict:
    out = {**schema, "nullable": True}
    if description:
        out["description"] = description
    return out


def _int(description: str, minimum=None, maximum=None, nullable=True) -> dict:
    schema = {"type": "integer", "description": description}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return _nullable(schema) if nullable else schema


def _num(description: str, minimum, maximum=None, **extra) -> dict:
    schema = {"type": "number", "minimum": minimum, "description": description, "nullable": True, **extra}
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _bool(description: str) -> dict:
    return {"type": "boolean", "nullable": True, "description": description}


def _obj(properties: dict, required=(), description: str | None = None, closed: bool = True) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


FUNCTION_NAME = {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$", "description": "1 to 64 of a-z, A-Z, 0-9, _ and -."}
JSON_SCHEMA = {"type": "object", "additionalProperties": True, "description": "A JSON Schema (Draft 2020-12) object."}

NAME = {"type": "string", "nullable": True, "description": "A participant name."}
TEXT_CONTENT = {
    "description": "A string or a non-empty array of text parts (joined with newlines).",
    "oneOf": [{"type": "string"},
              {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatCompletionRequestContentPart"}}],
}

SCHEMAS = {
    "ChatCompletionRequestContentPart": _obj(
        {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}, ["type", "text"],
        "A text part. Image, audio and file parts are refused: the models read text only.",
    ),
    "ChatCompletionRequestRefusalPart": _obj(
        {"type": {"type": "string", "enum": ["refusal"]}, "refusal": {"type": "string"}}, ["type", "refusal"],
        "Assistant messages only.",
    ),
    "ChatCompletionMessageToolCall": _obj({
        "id": {"type": "string"},
        "type": {"type": "string", "enum": ["function"]},
        "function": _obj({"name": {"type": "string", "minLength": 1},
                          "arguments": {"type": "string", "description": "The arguments, encoded as JSON."}},
                         ["name", "arguments"]),
    }, ["id", "type", "function"]),
    "ChatCompletionRequestMessage": {
        "description": "A message: one shape per role. Fields not listed are refused with a 400.",
        "oneOf": [ref("ChatCompletionRequestSystemMessage"), ref("ChatCompletionRequestUserMessage"),
                  ref("ChatCompletionRequestAssistantMessage"), ref("ChatCompletionRequestToolMessage")],
    },
    "ChatCompletionRequestSystemMessage": _obj({
        "role": {"type": "string", "enum": ["system", "developer"], "description": "`developer` is read as `system`."},
        "content": TEXT_CONTENT,
        "name": NAME,
    }, ["role", "content"]),
    "ChatCompletionRequestUserMessage": _obj({
        "role": {"type": "string", "enum": ["user"]},
        "content": TEXT_CONTENT,
        "name": NAME,
    }, ["role", "content"]),
    "ChatCompletionRequestAssistantMessage": {
        **_obj({
            "role": {"type": "string", "enum": ["assistant"]},
            "content": {
                "description": "A string or a non-empty array of text or refusal parts. May be left out when the "
                               "message carries `tool_calls`.",
                "oneOf": [{"type": "string"},
                          {"type": "array", "minItems": 1, "items": {"oneOf": [
                              ref("ChatCompletionRequestContentPart"), ref("ChatCompletionRequestRefusalPart")]}}],
            },
            "name": NAME,
            "tool_calls": {"type": "array", "minItems": 1, "items": ref("ChatCompletionMessageToolCall"),
                           "description": "The calls the assistant made."},
            "refusal": {"type": "string", "nullable": True},
        }, ["role"]),
        "anyOf": [{"required": ["content"]}, {"required": ["tool_calls"]}],
    },
    "ChatCompletionRequestToolMessage": _obj({
        "role": {"type": "string", "enum": ["tool"]},
        "content": TEXT_CONTENT,
        "tool_call_id": {"type": "string", "description": "The call this message answers."},
    }, ["role", "content", "tool_call_id"]),
    "ChatCompletionTool": _obj({
        "type": {"type": "string", "enum": ["function"]},
        "function": _obj({
            "name": FUNCTION_NAME,
            "description": {"type": "string", "nullable": True},
            "parameters": {**JSON_SCHEMA, "nullable": True, "description": "A JSON Schema of type object "
                                                                           "(default: no parameters)."},
            "strict": _bool("Constrain the arguments to the schema exactly."),
        }, ["name"]),
    }, ["type", "function"]),
    "ChatCompletionToolChoiceOption": {
        "nullable": True,
        "description": "`none`, `auto` (the default when tools are given), `required`, or one named function.",
        "oneOf": [
            {"type": "string", "enum": ["none", "auto", "required"]},
            _obj({"type": {"type": "string", "enum": ["function"]},
                  "function": _obj({"name": FUNCTION_NAME}, ["name"])}, ["type", "function"]),
        ],
    },
    "ResponseFormat": {
        "nullable": True,
        "description": "`text` (default), `json_object` (any JSON object), or `json_schema` (JSON matching "
                       "the schema, enforced while decoding).",
        "oneOf": [
            _obj({"type": {"type": "string", "enum": ["text"]}}, ["type"]),
            _obj({"type": {"type": "string", "enum": ["json_object"]}}, ["type"]),
            _obj({
                "type": {"type": "string", "enum": ["json_schema"]},
                "json_schema": _obj({
                    "name": FUNCTION_NAME,
                    "description": {"type": "string", "nullable": True},
                    "schema": JSON_SCHEMA,
                    "strict": _bool("Whether the schema is followed strictly."),
                }, ["name", "schema"]),
            }, ["type", "json_schema"]),
        ],
    },
    "ChatCompletionRequest": _obj({
        "model": {"type": "string", "minLength": 1, "description": "A model id from GET /v1/models."},
        "messages": {"type": "array", "minItems": 1, "maxItems": 2048,
                     "items": ref("ChatCompletionRequestMessage"),
                     "description": "The conversation so far. With `session_id`, the session's history is put "
                                    "before these."},
        "max_completion_tokens": _int("Most tokens to generate (default: the rest of the context window).", 1),
        "max_tokens": _int("Deprecated alias of `max_completion_tokens`, which wins when both are given.", 1),
        "temperature": _num("Sampling temperature; 0 is greedy. Default: the model's.", 0, 2),
        "top_p": _num("Nucleus sampling mass. Default: the model's.", 0, 1),
        "n": _int("Choices to generate; they share one prompt.", 1, 128),
        "stop": {
            "nullable": True,
            "description": "Up to 32 sequences that end generation; they are not part of the output unless "
                           "`include_stop_str_in_output`.",
            "oneOf": [{"type": "string", "minLength": 1},
                      {"type": "array", "maxItems": 32, "items": {"type": "string", "minLength": 1}}],
        },
        "presence_penalty": _num("Penalty for tokens already present in the output.", -2, 2),
        "frequency_penalty": _num("Penalty growing with how often a token was already generated.", -2, 2),
        "logit_bias": {
            "type": "object", "nullable": True,
            "description": "Token id (a non-negative integer written as a string, e.g. \"50256\") → bias added "
                           "to its logit, from -100 to 100 (-100 bans the token). At most 300 entries.",
            "maxProperties": 300,
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
        },
        "logprobs": _bool("Return the log probability of each output token."),
        "top_logprobs": _int("Most likely alternatives returned per token; needs `logprobs`.", 0, 20),
        "seed": _int("Makes sampling repeatable.", INT64_MIN, UINT64_MAX),
        "stream": _bool("Answer with server-sent events (text/event-stream) instead of one JSON body."),
        "stream_options": {**_obj({
            "include_usage": _bool("Send a last chunk with the token usage."),
            "continuous_usage_stats": {"type": "boolean", "nullable": True, "enum": [False, None],
                                       "description": "Only false: usage comes in the last chunk."},
        }, description="Only with `stream`."), "nullable": True},
        "user": {"type": "string", "nullable": True, "description": "Your end user's id, kept with the usage."},
        "metadata": {"type": "object", "nullable": True, "maxProperties": 16,
                     "additionalProperties": {"type": "string", "maxLength": 512},
                     "description": "Accepted for compatibility (keys up to 64 characters); not stored."},
        "store": _bool("Accepted for compatibility; completions are not stored."),
        "service_tier": {"type": "string", "nullable": True, "enum": ["auto", "default", None],
                         "description": "Accepted for compatibility; there is one tier."},
        "modalities": {"type": "array", "nullable": True, "minItems": 1, "maxItems": 1,
                       "items": {"type": "string", "enum": ["text"]}, "description": "Only [\"text\"]."},
        "tools": {"type": "array", "nullable": True, "maxItems": 128, "items": ref("ChatCompletionTool")},
        "tool_choice": ref("ChatCompletionToolChoiceOption"),
        "parallel_tool_calls": _bool("Whether the model may call several tools in one turn (default true)."),
        "response_format": ref("ResponseFormat"),
        "reasoning_effort": {"type": "string", "nullable": True,
                             "enum": ["none", "minimal", "low", "medium", "high", None],
                             "description": "For models that think before answering; `none` and `minimal` "
                                            "turn thinking off."},
        "top_k": _int("vLLM extension: sample among the k most likely tokens; -1 or 0 is off.", -1),
        "min_p": _num("vLLM extension: drop tokens below this fraction of the top token's probability.", 0, 1),
        "repetition_penalty": _num("vLLM extension: > 1 discourages repeating prompt and output tokens; "
                                   "1 is off.", 0, 2, exclusiveMinimum=True),
        "min_tokens": _int("vLLM extension: tokens to generate before EOS or stop may end the output; at most "
                           "the maximum tokens.", 0),
        "stop_token_ids": {"type": "array", "nullable": True, "maxItems": 64,
                           "items": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                           "description": "vLLM extension: token ids that end generation."},
        "include_stop_str_in_output": _bool("vLLM extension: keep the matched stop sequence in the output."),
        "skip_special_tokens": _bool("vLLM extension: leave special tokens out of the text (default true)."),
        "ignore_eos": _bool("vLLM extension: keep generating past the end-of-sequence token."),
        "chat_template_kwargs": {"type": "object", "nullable": True, "additionalProperties": True,
                                 "description": "vLLM extension: extra variables for the chat template, "
                                                "e.g. `enable_thinking`."},
        "chat_template_args": {"type": "object", "nullable": True, "additionalProperties": True,
                               "description": "Alias of `chat_template_kwargs` (not both)."},
        "add_generation_prompt": _bool("vLLM extension: end the prompt with the assistant header (default true)."),
        "continue_final_message": _bool("vLLM extension: continue the last (assistant) message instead of "
                                        "starting a new one."),
        "add_special_tokens": _bool("vLLM extension: add the tokenizer's special tokens to the prompt."),
        "documents": {"type": "array", "nullable": True,
                      "items": {"type": "object", "additionalProperties": {"type": "string"}},
                      "description": "vLLM extension: documents for templates that support retrieval."},
        "echo": _bool("vLLM extension: start each choice with the last message's content."),
        "prompt_logprobs": _int("vLLM extension: return the logprob of every prompt token after the first, with its "
                                "rank and this many most likely alternatives (`prompt_logprobs` in the response). The "
                                "prompt is computed in full (never taken from the cache). Not with `stream`.", 0, 20),
        "return_tokens_as_token_ids": _bool("vLLM extension: name the tokens of `logprobs` (and of "
                                            "`prompt_logprobs`) `token_id:N` instead of by their text."),
        "return_token_ids": _bool("vLLM extension: add the prompt's token ids (`prompt_token_ids`) and each "
                                  "choice's generated ones (`token_ids`) to the response; in a stream, the prompt's "
                                  "on the first chunk and each chunk's own tokens."),
        "truncate_prompt_tokens": _int("vLLM extension: keep only the last N prompt tokens.", 1),
        "structured_outputs": {
            "type": "object", "nullable": True, "additionalProperties": False,
            "properties": {
                "json": {"oneOf": [{"type": "object"}, {"type": "string"}], "nullable": True,
                         "description": "A JSON Schema (an object, or as JSON text) the answer follows."},
                "regex": {"type": "string", "nullable": True, "minLength": 1,
                          "description": "A regular expression the whole answer matches."},
                "choice": {"type": "array", "nullable": True, "minItems": 1,
                           "items": {"type": "string", "minLength": 1}, "description": "The answer is one of these."},
                "grammar": {"type": "string", "nullable": True, "minLength": 1,
                            "description": "An EBNF grammar (xgrammar's, root rule `root`) the answer follows."},
                "json_object": _bool("The answer is a JSON object."),
                "backend": {"type": "string", "nullable": True, "enum": ["auto", "xgrammar", None]},
                "disable_fallback": _bool("Accepted: there is one backend."),
                "disable_any_whitespace": _bool("Accepted: JSON is always compact."),
                "disable_additional_properties": _bool("Accepted: JSON schemas are always strict."),
            },
            "description": "vLLM extension: constrain the answer by one of `json`, `regex`, `choice`, `grammar` or "
                           "`json_object` (not beside a `response_format` other than text, nor a forced tool call). "
                           "The older `guided_json`, `guided_regex`, `guided_choice`, `guided_grammar` and "
                           "`guided_decoding_backend` are accepted as well."},
        "guided_json": {"oneOf": [{"type": "object"}, {"type": "string"}], "nullable": True,
                        "description": "vLLM extension, older name of `structured_outputs.json`."},
        "guided_regex": {"type": "string", "nullable": True,
                         "description": "vLLM extension, older name of `structured_outputs.regex`."},
        "guided_choice": {"type": "array", "nullable": True, "items": {"type": "string"},
                          "description": "vLLM extension, older name of `structured_outputs.choice`."},
        "guided_grammar": {"type": "string", "nullable": True,
                           "description": "vLLM extension, older name of `structured_outputs.grammar`."},
        "guided_decoding_backend": {"type": "string", "nullable": True, "enum": ["auto", "xgrammar", None],
                                    "description": "vLLM extension: xgrammar is the one backend."},
        "session_id": {"type": "string", "nullable": True, "minLength": 1, "maxLength": 64,
                       "description": "A server-side session (see /api/sessions): its history is put before "
                                      "`messages`, and the new messages and the answer are added to it."},
    }, ["model", "messages"], "Unknown parameters are refused with a 400 naming them."),
    "PromptLogprobs": {
        "type": "array", "description": "vLLM's shape: null for the prompt's first token, then per prompt token a map "
                                        "of token ids to their logprob, rank and text, holding the prompt's token and "
                                        "the most likely ones.",
        "items": {"type": "object", "nullable": True, "additionalProperties": _obj({
            "logprob": {"type": "number"}, "rank": {"type": "integer", "minimum": 1},
            "decoded_token": {"type": "string"}}, ["logprob", "rank", "decoded_token"])}},
    "CompletionUsage": _obj({
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "prompt_tokens_details": _obj({
            "cached_tokens": {"type": "integer", "minimum": 0,
                              "description": "Prompt tokens served from the prefix cache, charged the model's "
                                             "cached input price; 0 when none."},
        }, ["cached_tokens"], closed=False),
    }, ["prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"], closed=False),
    "TokenLogprob": _obj({
        "token": {"type": "string"},
        "logprob": {"type": "number"},
        "bytes": {"type": "array", "nullable": True, "items": {"type": "integer"}},
        "top_logprobs": {"type": "array", "items": _obj({
            "token": {"type": "string"}, "logprob": {"type": "number"},
            "bytes": {"type": "array", "nullable": True, "items": {"type": "integer"}},
        }, ["token", "logprob"], closed=False)},
    }, ["token", "logprob"], closed=False),
    "ChoiceLogprobs": _nullable(_obj({
        "content": {"type": "array", "nullable": True, "items": ref("TokenLogprob")},
        "refusal": {"type": "array", "nullable": True, "items": ref("TokenLogprob")},
    }, closed=False)),
    "ChatCompletionResponseMessage": _obj({
        "role": {"type": "string", "enum": ["assistant"]},
        "content": {"type": "string", "nullable": True},
        "refusal": {"type": "string", "nullable": True},
        "tool_calls": {"type": "array", "items": ref("ChatCompletionMessageToolCall")},
    }, ["role", "content"], closed=False),
    "ChatCompletion": _obj({
        "id": {"type": "string", "description": "Also in the `x-request-id` header."},
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": {"type": "integer", "description": "Unix seconds."},
        "model": {"type": "string"},
        "system_fingerprint": {"type": "string"},
        "choices": {"type": "array", "items": _obj({
            "index": {"type": "integer"},
            "message": ref("ChatCompletionResponseMessage"),
            "logprobs": ref("ChoiceLogprobs"),
            "finish_reason": {"type": "string", "enum": ["stop", "length", "tool_calls"]},
            "token_ids": {"type": "array", "items": {"type": "integer"},
                          "description": "Only with `return_token_ids`: the tokens generated (EOS included)."},
        }, ["index", "message", "finish_reason"], closed=False)},
        "usage": ref("CompletionUsage"),
        "session_id": {"type": "string", "description": "The session the exchange was added to, if any."},
        "prompt_logprobs": {**ref("PromptLogprobs"), "description": "Only with `prompt_logprobs`."},
        "prompt_token_ids": {"type": "array", "items": {"type": "integer"},
                             "description": "Only with `return_token_ids`."},
    }, ["id", "object", "created", "model", "choices", "usage"], closed=False),
    "ChatCompletionChunk": _obj({
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion.chunk"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "system_fingerprint": {"type": "string"},
        "choices": {"type": "array", "items": _obj({
            "index": {"type": "integer"},
            "delta": _obj({
                "role": {"type": "string", "enum": ["assistant"]},
                "content": {"type": "string", "nullable": True},
                "tool_calls": {"type": "array", "items": {"type": "object"}},
            }, closed=False),
            "logprobs": ref("ChoiceLogprobs"),
            "finish_reason": {"type": "string", "nullable": True, "enum": ["stop", "length", "tool_calls", None]},
        }, ["index", "delta"], closed=False)},
        "usage": {"nullable": True, "allOf": [ref("CompletionUsage")],
         "description": "Only with `stream_options.include_usage`: null on every chunk but the last, which has "
                        "no choices."},
        "session_id": {"type": "string"},
    }, ["id", "object", "created", "model", "choices"], closed=False,
        description="One `data:` event of a stream."),
    "Model": _obj({
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["model"]},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "max_model_len": {"type": "integer", "minimum": 1,
                          "description": "The context window (prompt and completion tokens together) requests for "
                                         "the model are checked against on this server."},
    }, ["id", "object", "created", "owned_by"], closed=False),
    "ModelList": _obj({
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": ref("Model")},
    }, ["object", "data"], closed=False),
    "ErrorDetail": _obj({
        "message": {"type": "string"},
        "type": {"type": "string"},
        "param": {"type": "string", "nullable": True, "description": "The parameter at fault, e.g. "
                                                                    "`messages[1].content`."},
        "code": {"type": "string", "nullable": True},
    }, ["message", "type", "param", "code"]),
    "Error": _obj({"error": ref("ErrorDetail")}, ["error"], "An OpenAI error object."),
}

REQUEST_ID = {"x-request-id": {"description": "The completion id (or a request id for failures before one).",
                               "schema": {"type": "string"}}}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}

ERRORS = {
    "400": "Invalid body or parameter (`param` names it); `context_length_exceeded` when the prompt and "
           "`max_completion_tokens` do not fit the model.",
    "401": "Missing, unknown, revoked or expired API key.",
    "402": "The organization's available credit cannot cover the request's worst-case cost.",
    "403": "This API key may not use the model.",
    "404": "Unknown model, or unknown `session_id`.",
    "413": "The request body is too large.",
    "429": "A rate limit of the key or its organization is reached (`rate_limit_exceeded`, `type` requests or "
           "tokens), or the key's spend cap (`spend_cap_reached`, `type` insufficient_quota). `Retry-After` says "
           "when to retry; `x-ratelimit-*` headers give the limits and what remains.",
    "503": "No inference worker can take the request now; nothing was charged.",
}


def _error(description: str, retry: bool = False) -> dict:
    headers = {**REQUEST_ID, **(RETRY_AFTER if retry else {})}
    return {"description": description, "headers": headers,
            "content": {"application/json": {"schema": ref("Error")}}}


def _errors(*statuses: str) -> dict:
    return {status: _error(ERRORS[status], retry=status in ("429", "503")) for status in statuses}


STREAM_DESCRIPTION = (
    "With `stream: true`: server-sent events. Each event is `data: ` and one ChatCompletionChunk as JSON, "
    "then a blank line; the stream ends with `data: [DONE]`. A failure after the stream has started arrives "
    "as one `data: ` event holding an Error object."
)


def generation_operation(operation_id: str, summary: str, description: str, tag: str, request: dict,
                         response: dict, stream_description: str) -> dict:
    """A keyed POST that generates: its body, its answer whole or streamed, and every error it can meet."""
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "tags": [tag],
        "security": [{SECURITY_SCHEME: []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {
                "description": "The completion, or its stream.",
                "headers": REQUEST_ID,
                "content": {
                    "application/json": {"schema": response},
                    "text/event-stream": {"schema": {"type": "string", "description": stream_description}},
                },
            },
            **_errors("400", "401", "402", "403", "404", "413", "429", "503"),
        },
    }


def _chat_operation(suffix: str) -> dict:
    return generation_operation(
        "createChatCompletion" + suffix, "Create a chat completion",
        "OpenAI-compatible. The request holds its worst-case cost before it runs and is charged its exact usage when "
        "it ends.", "chat", ref("ChatCompletionRequest"), ref("ChatCompletion"), STREAM_DESCRIPTION)


def _models_operation(suffix: str) -> dict:
    return {
        "operationId": "listModels" + suffix,
        "summary": "List models",
        "tags": ["models"],
        "security": [{SECURITY_SCHEME: []}],
        "responses": {"200": {"description": "The models this server can answer with now.",
                              "content": {"application/json": {"schema": ref("ModelList")}}},
                      **_errors("401")},
    }


def _model_operation(suffix: str) -> dict:
    return {
        "operationId": "retrieveModel" + suffix,
        "summary": "Get a model",
        "tags": ["models"],
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "A model id."}],
        "responses": {"200": {"description": "The model.", "content": {"application/json": {"schema": ref("Model")}}},
                      **_errors("401", "404")},
    }
