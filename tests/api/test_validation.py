"""parse_body / parse_chat_request: each parameter's valid values land in the ChatRequest,
each invalid one is a 400 naming the parameter the way OpenAI does. No server needed."""
import pytest

from core.errors import APIError
from inference.chat.request import TOOL_CHOICE_AUTO, TOOL_CHOICE_NAMED, TOOL_CHOICE_NONE, TOOL_CHOICE_REQUIRED
from inference.chat.validation import parse_body, parse_chat_request

HELLO = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def parse(**fields):
    return parse_chat_request({"model": "m", "messages": HELLO, **fields})


def refused(body, param, code=None) -> APIError:
    with pytest.raises(APIError) as raised:
        parse_chat_request(body)
    error = raised.value
    assert error.status == 400 and error.type == "invalid_request_error"
    assert error.param == param, error.message
    assert error.message
    if code is not None:
        assert error.code == code, error.message
    return error


def refused_field(param, code=None, **fields) -> APIError:
    return refused({"model": "m", "messages": HELLO, **fields}, param, code)


# --- body -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe\x00", b"", b'{"a": NaN}',
                                 b'{"a": Infinity}', b'{"a": "\\ud800"}', b"[" * 100_000, b"1" * 5000])
def test_a_body_that_is_not_a_valid_json_object_is_400(raw):
    with pytest.raises(APIError) as raised:
        parse_body(raw)
    assert raised.value.status == 400 and raised.value.param is None


def test_a_json_object_body_parses():
    assert parse_body(b'{"model": "m", "n": 2}') == {"model": "m", "n": 2}


def test_a_minimal_request_gets_the_documented_defaults():
    chat = parse()
    assert chat.model == "m" and chat.messages == [{"role": "user", "content": "hi"}]
    assert (chat.max_tokens, chat.temperature, chat.top_p, chat.top_k) == (None, None, None, None)
    assert (chat.n, chat.stream, chat.include_usage, chat.logprobs, chat.top_logprobs) == (1, False, False, False, 0)
    assert chat.tool_choice.mode == TOOL_CHOICE_NONE and chat.tools == ()
    assert chat.response_format.type == "text" and chat.add_generation_prompt and chat.skip_special_tokens


@pytest.mark.parametrize("body, param, code", [
    ({"messages": HELLO}, "model", "missing_required_parameter"),
    ({"model": "", "messages": HELLO}, "model", "invalid_value"),
    ({"model": 3, "messages": HELLO}, "model", "invalid_type"),
    ({"model": "m"}, "messages", "missing_required_parameter"),
    ({"model": "m", "messages": []}, "messages", "empty_array"),
    ({"model": "m", "messages": {"role": "user"}}, "messages", "invalid_type"),
    ({"model": "m", "messages": HELLO, "frobnicate": 1}, "frobnicate", "unknown_parameter"),
])
def test_model_messages_and_unknown_fields(body, param, code):
    refused(body, param, code)


def test_null_means_not_given_for_every_optional_parameter():
    names = ["max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
             "presence_penalty", "frequency_penalty", "logit_bias", "n", "logprobs", "top_logprobs", "seed", "stop",
             "stop_token_ids", "min_tokens", "include_stop_str_in_output", "skip_special_tokens", "ignore_eos",
             "stream", "stream_options", "user", "metadata", "store", "service_tier", "modalities", "tools",
             "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort", "chat_template_kwargs",
             "add_generation_prompt", "continue_final_message", "add_special_tokens", "documents", "echo",
             "truncate_prompt_tokens", "session_id", "best_of", "use_beam_search", "chat_template", "guided_json",
             "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend", "structured_outputs",
             "guided_whitespace_pattern", "audio", "functions", "function_call", "kv_transfer_params"]
    assert parse(**dict.fromkeys(names)) == parse()


# --- messages -------------------------------------------------------------------------------------

def test_roles_are_normalised_and_text_parts_joined():
    chat = parse_chat_request({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "s"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "refusal", "refusal": "no"}]},
        {"role": "assistant", "content": None, "refusal": "I can't help with that."},
    ]})
    assert chat.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "system", "content": "a\nb", "name": "s"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": 1}"}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "x\nno"},
        {"role": "assistant", "content": "I can't help with that."},
    ]


def test_an_assistant_message_may_have_both_content_and_tool_calls():
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
    chat = parse_chat_request({"model": "m", "messages": [*HELLO, {"role": "assistant", "content": "ok",
                                                                    "tool_calls": [call]}]})
    assert chat.messages[1] == {"role": "assistant", "content": "ok", "tool_calls": [call]}


def _message_error(message, param, code=None):
    return refused({"model": "m", "messages": [*HELLO, message]}, param, code)


@pytest.mark.parametrize("message, param, code", [
    ("hi", "messages[1]", "invalid_type"),
    ({"content": "x"}, "messages[1].role", "missing_required_parameter"),
    ({"role": "robot", "content": "x"}, "messages[1].role", "invalid_value"),
    ({"role": "user", "content": 5}, "messages[1].content", "invalid_type"),
    ({"role": "user"}, "messages[1].content", "missing_required_parameter"),
    ({"role": "user", "content": []}, "messages[1].content", "empty_array"),
    ({"role": "user", "content": ["x"]}, "messages[1].content[0]", "invalid_type"),
    ({"role": "user", "content": [{"type": "text"}]}, "messages[1].content[0].text", "missing_required_parameter"),
    ({"role": "user", "content": [{"type": "text", "text": 1}]}, "messages[1].content[0].text", "invalid_type"),
    ({"role": "user", "content": [{"text": "x"}]}, "messages[1].content[0].type", "missing_required_parameter"),
    ({"role": "user", "content": [{"type": "video", "text": "x"}]}, "messages[1].content[0].type", "invalid_value"),
    ({"role": "user", "content": [{"type": "refusal", "refusal": "x"}]}, "messages[1].content[0].type",
     "invalid_value"),
    ({"role": "user", "content": [{"type": "text", "text": "x", "extra": 1}]}, "messages[1].content[0].extra",
     "unknown_parameter"),
    ({"role": "user", "content": "x", "name": 3}, "messages[1].name", "invalid_type"),
    ({"role": "user", "content": "x", "name": "n" * 65}, "messages[1].name", "invalid_value"),
    ({"role": "tool", "content": "x", "tool_call_id": "c" * 101}, "messages[1].tool_call_id", "invalid_value"),
    ({"role": "user", "content": "x", "mood": "happy"}, "messages[1].mood", "unknown_parameter"),
    ({"role": "user", "content": "x", "tool_calls": []}, "messages[1].tool_calls", "invalid_value"),
    ({"role": "user", "content": "x", "tool_call_id": "c"}, "messages[1].tool_call_id", "invalid_value"),
    ({"role": "assistant"}, "messages[1].content", "missing_required_parameter"),
    ({"role": "assistant", "content": None, "tool_calls": []}, "messages[1].content", "missing_required_parameter"),
    ({"role": "assistant", "content": "x", "refusal": 1}, "messages[1].refusal", "invalid_type"),
    ({"role": "tool", "content": "x"}, "messages[1].tool_call_id", "missing_required_parameter"),
    ({"role": "tool", "content": "x", "tool_call_id": 7}, "messages[1].tool_call_id", "invalid_type"),
    ({"role": "tool", "tool_call_id": "c"}, "messages[1].content", "missing_required_parameter"),
])
def test_invalid_messages_name_the_field(message, param, code):
    _message_error(message, param, code)


@pytest.mark.parametrize("call, param, code", [
    ("c", "messages[1].tool_calls[0]", "invalid_type"),
    ({"type": "function", "function": {"name": "f", "arguments": "{}"}}, "messages[1].tool_calls[0].id",
     "missing_required_parameter"),
    ({"id": "c", "type": "custom", "function": {"name": "f", "arguments": "{}"}}, "messages[1].tool_calls[0].type",
     "invalid_value"),
    ({"id": "c", "type": "function", "function": {"arguments": "{}"}}, "messages[1].tool_calls[0].function.name",
     "missing_required_parameter"),
    ({"id": "c", "type": "function", "function": {"name": "f", "arguments": {"city": "Oslo"}}},
     "messages[1].tool_calls[0].function.arguments", "invalid_type"),
    ({"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}", "x": 1}},
     "messages[1].tool_calls[0].function.x", "unknown_parameter"),
])
def test_invalid_assistant_tool_calls_name_the_field(call, param, code):
    _message_error({"role": "assistant", "tool_calls": [call]}, param, code)


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
    {"type": "file", "file": {"file_id": "f"}},
])
def test_non_text_content_is_refused_as_text_only(part):
    error = _message_error({"role": "user", "content": [{"type": "text", "text": "see"}, part]},
                           "messages[1].content[1].type", "unsupported_content")
    assert "text only" in error.message


def test_the_legacy_function_role_and_function_call_point_to_tools():
    error = _message_error({"role": "function", "name": "f", "content": "x"}, "messages[1].role",
                           "unsupported_value")
    assert "tool" in error.message
    error = _message_error({"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": ""}},
                           "messages[1].function_call", "unsupported_parameter")
    assert "tool_calls" in error.message


def test_too_many_messages_are_refused():
    refused({"model": "m", "messages": HELLO * 2049}, "messages", "array_above_max_length")


# --- sampling -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, value, field, expected", [
    ("temperature", 0, "temperature", 0.0), ("temperature", 2, "temperature", 2.0),
    ("top_p", 0, "top_p", 0.0), ("top_p", 0.5, "top_p", 0.5),
    ("top_k", -1, "top_k", -1), ("top_k", 0, "top_k", 0), ("top_k", 40, "top_k", 40),
    ("min_p", 1, "min_p", 1.0), ("repetition_penalty", 0.5, "repetition_penalty", 0.5),
    ("repetition_penalty", 2, "repetition_penalty", 2.0),
    ("presence_penalty", -2, "presence_penalty", -2.0), ("frequency_penalty", 1.5, "frequency_penalty", 1.5),
    ("n", 128, "n", 128), ("seed", -(2**63), "seed", -(2**63)), ("seed", 2**64 - 1, "seed", 2**64 - 1),
    ("stop", "END", "stop", ("END",)), ("stop", ["a", "b", "a"], "stop", ("a", "b")),
    ("stop_token_ids", [0, 7], "stop_token_ids", (0, 7)),
    ("max_tokens", 5, "max_tokens", 5), ("max_completion_tokens", 9, "max_tokens", 9),
    ("min_tokens", 3, "min_tokens", 3), ("include_stop_str_in_output", True, "include_stop_str_in_output", True),
    ("skip_special_tokens", False, "skip_special_tokens", False), ("ignore_eos", True, "ignore_eos", True),
    ("stream", True, "stream", True), ("user", "u-1", "user", "u-1"),
    ("logit_bias", {"0": -100, "50256": 100, "7": 0.5}, "logit_bias", {0: -100.0, 50256: 100.0, 7: 0.5}),
    ("reasoning_effort", "minimal", "reasoning_effort", "minimal"),
    ("chat_template_kwargs", {"enable_thinking": False}, "chat_template_kwargs", {"enable_thinking": False}),
    ("chat_template_args", {"enable_thinking": True}, "chat_template_kwargs", {"enable_thinking": True}),
    ("add_special_tokens", True, "add_special_tokens", True), ("echo", True, "echo", True),
    ("documents", [{"title": "t", "text": "x"}], "documents", [{"title": "t", "text": "x"}]),
    ("truncate_prompt_tokens", 1, "truncate_prompt_tokens", 1),
    ("session_id", "s" * 64, "session_id", "s" * 64),
    ("parallel_tool_calls", False, "parallel_tool_calls", False),
])
def test_valid_values_reach_the_request(name, value, field, expected):
    got = getattr(parse(**{name: value}), field)
    assert got == expected and type(got) is type(expected)


def test_max_completion_tokens_wins_over_max_tokens():
    assert parse(max_tokens=50, max_completion_tokens=7).max_tokens == 7


def test_logprobs_with_top_logprobs():
    chat = parse(logprobs=True, top_logprobs=20)
    assert chat.logprobs and chat.top_logprobs == 20


def test_stream_options_include_usage():
    assert parse(stream=True, stream_options={"include_usage": True}).include_usage
    assert not parse(stream=True, stream_options={"include_usage": False, "continuous_usage_stats": False}
                     ).include_usage


@pytest.mark.parametrize("fields, param, code", [
    ({"temperature": 2.01}, "temperature", "invalid_value"),
    ({"temperature": -0.1}, "temperature", "invalid_value"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"temperature": True}, "temperature", "invalid_type"),
    ({"top_p": 1.5}, "top_p", "invalid_value"),
    ({"top_k": -2}, "top_k", "invalid_value"),
    ({"top_k": 1.5}, "top_k", "invalid_type"),
    ({"min_p": 1.1}, "min_p", "invalid_value"),
    ({"repetition_penalty": 0}, "repetition_penalty", "invalid_value"),
    ({"repetition_penalty": 2.5}, "repetition_penalty", "invalid_value"),
    ({"presence_penalty": 2.5}, "presence_penalty", "invalid_value"),
    ({"frequency_penalty": -3}, "frequency_penalty", "invalid_value"),
    ({"logit_bias": []}, "logit_bias", "invalid_type"),
    ({"logit_bias": {"50256": 101}}, "logit_bias.50256", "invalid_value"),
    ({"logit_bias": {"50256": "up"}}, "logit_bias.50256", "invalid_type"),
    ({"logit_bias": {"-1": 1}}, "logit_bias.-1", "invalid_value"),
    ({"logit_bias": {"hello": 1}}, "logit_bias.hello", "invalid_value"),
    ({"logit_bias": {"99999999999": 1}}, "logit_bias.99999999999", "invalid_value"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias", "invalid_value"),
    ({"n": 0}, "n", "invalid_value"), ({"n": 129}, "n", "invalid_value"),
    ({"logprobs": 1}, "logprobs", "invalid_type"),
    ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),
    ({"logprobs": False, "top_logprobs": 0}, "top_logprobs", "invalid_value"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
    ({"seed": "x"}, "seed", "invalid_type"), ({"seed": 2**64}, "seed", "invalid_value"),
    ({"seed": 1.0}, "seed", "invalid_type"),
    ({"stop": ["a"] * 33}, "stop", "invalid_value"), ({"stop": [1]}, "stop", "invalid_type"),
    ({"stop": ""}, "stop", "invalid_value"), ({"stop": {"a": 1}}, "stop", "invalid_type"),
    ({"stop_token_ids": [1, -1]}, "stop_token_ids[1]", "invalid_value"),
    ({"stop_token_ids": list(range(65))}, "stop_token_ids", "array_above_max_length"),
    ({"stop_token_ids": 3}, "stop_token_ids", "invalid_type"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"max_completion_tokens": 2.5}, "max_completion_tokens", "invalid_type"),
    ({"min_tokens": -1}, "min_tokens", "invalid_value"),
    ({"min_tokens": 10, "max_tokens": 5}, "min_tokens", "invalid_value"),
    ({"min_tokens": 10, "max_tokens": 50, "max_completion_tokens": 5}, "min_tokens", "invalid_value"),
    ({"include_stop_str_in_output": "yes"}, "include_stop_str_in_output", "invalid_type"),
    ({"skip_special_tokens": 0}, "skip_special_tokens", "invalid_type"),
    ({"ignore_eos": "true"}, "ignore_eos", "invalid_type"),
    ({"stream": "yes"}, "stream", "invalid_type"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"stream": False, "stream_options": {}}, "stream_options", "invalid_value"),
    ({"stream": True, "stream_options": []}, "stream_options", "invalid_type"),
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage", "invalid_type"),
    ({"stream": True, "stream_options": {"continuous_usage_stats": True}}, "stream_options.continuous_usage_stats",
     "unsupported_value"),
    ({"stream": True, "stream_options": {"verbose": True}}, "stream_options.verbose", "unknown_parameter"),
    ({"user": 5}, "user", "invalid_type"),
])
def test_invalid_sampling_values_name_the_param(fields, param, code):
    refused_field(param, code, **fields)


# --- ignored / refused / neutral-only parameters --------------------------------------------------

def test_parameters_that_change_no_output_are_accepted_and_ignored():
    chat = parse(metadata={"team": "a"}, store=True, service_tier="auto", modalities=["text"])
    assert chat == parse()
    assert parse(service_tier="default") == parse()


@pytest.mark.parametrize("fields, param, code", [
    ({"metadata": {"team": 1}}, "metadata.team", "invalid_type"),
    ({"metadata": "x"}, "metadata", "invalid_type"),
    ({"metadata": {str(i): "v" for i in range(17)}}, "metadata", "invalid_value"),
    ({"store": "no"}, "store", "invalid_type"),
    ({"service_tier": "flex"}, "service_tier", "unsupported_value"),
    ({"service_tier": "fast"}, "service_tier", "invalid_value"),
    ({"modalities": ["text", "audio"]}, "modalities", "unsupported_value"),
    ({"modalities": "text"}, "modalities", "invalid_value"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "unsupported_parameter"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction", "unsupported_parameter"),
    ({"web_search_options": {}}, "web_search_options", "unsupported_parameter"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions", "unsupported_parameter"),
    ({"function_call": "auto"}, "function_call", "unsupported_parameter"),
])
def test_ignored_and_unsupported_parameters(fields, param, code):
    refused_field(param, code, **fields)


NEUTRAL = {"best_of": 1, "use_beam_search": False, "length_penalty": 1.0, "early_stopping": False, "bad_words": [],
           "bad": [], "bad_token_ids": [], "top_p_min": 0, "spaces_between_special_tokens": True}


def test_extras_with_their_neutral_value_change_nothing():
    assert parse(**NEUTRAL) == parse()
    assert parse(length_penalty=1, bad="") == parse()


@pytest.mark.parametrize("name, value", [
    ("best_of", 2), ("best_of", True), ("use_beam_search", True), ("length_penalty", 1.2), ("early_stopping", True),
    ("bad_words", ["darn"]), ("bad", "darn"), ("bad_token_ids", [5]), ("top_p_min", 0.1),
    ("spaces_between_special_tokens", False), ("chat_template", "{{ messages }}"), ("kv_transfer_params", {}),
    ("disaggregated_params", {"x": 1}), ("guided_whitespace_pattern", r"[ ]?"),
])
def test_extras_the_server_cannot_honour_are_refused_with_a_reason(name, value):
    error = refused_field(name, "unsupported_parameter", **{name: value})
    assert "not supported" in error.message


# --- structured outputs (vLLM) --------------------------------------------------------------------

@pytest.mark.parametrize("fields, kind, value, param", [
    ({"structured_outputs": {"choice": ["yes", "no"]}}, "choice", ("yes", "no"), "structured_outputs.choice"),
    ({"guided_choice": ["yes", "no"]}, "choice", ("yes", "no"), "guided_choice"),
    ({"structured_outputs": {"regex": r"\d+"}}, "regex", r"\d+", "structured_outputs.regex"),
    ({"guided_regex": "a+", "guided_decoding_backend": "xgrammar"}, "regex", "a+", "guided_regex"),
    ({"structured_outputs": {"grammar": 'root ::= "a"'}}, "grammar", 'root ::= "a"', "structured_outputs.grammar"),
    ({"guided_grammar": 'root ::= "a"'}, "grammar", 'root ::= "a"', "guided_grammar"),
    ({"structured_outputs": {"json": {"type": "object"}, "disable_any_whitespace": True}}, "json",
     {"type": "object"}, "structured_outputs.json"),
    ({"guided_json": '{"type": "integer"}'}, "json", {"type": "integer"}, "guided_json"),  # as JSON text
    ({"structured_outputs": {"json_object": True}}, "json_object", None, "structured_outputs.json_object"),
])
def test_structured_outputs_and_their_older_guided_names(fields, kind, value, param):
    structured = parse(**fields).structured
    assert (structured.kind, structured.value, structured.param) == (kind, value, param)


def test_no_structured_output_is_none():
    assert parse().structured is None and parse(structured_outputs={"json_object": False}).structured is None


@pytest.mark.parametrize("fields, param, code", [
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice", "invalid_value"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs.choice", "invalid_value"),
    ({"guided_regex": "a", "structured_outputs": {"regex": "b"}}, "structured_outputs.regex", "invalid_value"),
    ({"guided_regex": "a", "response_format": {"type": "json_object"}}, "guided_regex", "invalid_value"),
    ({"structured_outputs": {}}, "structured_outputs", "invalid_value"),
    ({"structured_outputs": "yes"}, "structured_outputs", "invalid_type"),
    ({"structured_outputs": {"choices": ["a"]}}, "structured_outputs.choices", "unknown_parameter"),
    ({"structured_outputs": {"whitespace_pattern": " "}}, "structured_outputs.whitespace_pattern",
     "unsupported_parameter"),
    ({"structured_outputs": {"structural_tag": "{}"}}, "structured_outputs.structural_tag", "unsupported_parameter"),
    ({"structured_outputs": {"regex": "a", "backend": "outlines"}}, "structured_outputs.backend", "invalid_value"),
    ({"guided_regex": "a", "guided_decoding_backend": "guidance"}, "guided_decoding_backend", "invalid_value"),
    ({"guided_choice": []}, "guided_choice", "empty_array"),
    ({"guided_choice": "yes"}, "guided_choice", "invalid_type"),
    ({"guided_choice": ["yes", ""]}, "guided_choice[1]", None),
    ({"guided_choice": ["yes", 1]}, "guided_choice[1]", "invalid_type"),
    ({"guided_choice": ["yes", "yes"]}, "guided_choice", "invalid_value"),
    ({"guided_regex": ""}, "guided_regex", None),
    ({"guided_grammar": 5}, "guided_grammar", "invalid_type"),
    ({"guided_json": "{not json"}, "guided_json", "invalid_value"),
    ({"guided_json": {"type": 5}}, "guided_json", "invalid_value"),
    ({"structured_outputs": {"json_object": "yes"}}, "structured_outputs.json_object", "invalid_type"),
    ({"guided_choice": [str(i) for i in range(1001)]}, "guided_choice", "schema_too_large"),
    ({"guided_regex": "a" * (128 * 1024 + 1)}, "guided_regex", "schema_too_large"),
])
def test_invalid_structured_outputs_name_the_field(fields, param, code):
    refused_field(param, code, **fields)


# --- tools ----------------------------------------------------------------------------------------

def test_tools_and_default_tool_choice():
    chat = parse(tools=[WEATHER, {"type": "function", "function": {"name": "now", "strict": True}}])
    weather, now = chat.tools
    assert weather.name == "get_weather" and weather.description == "Weather in a city"
    assert weather.parameters == WEATHER["function"]["parameters"] and not weather.strict
    assert now.parameters == {"type": "object", "properties": {}} and now.strict and now.description is None
    assert now.as_openai()["function"] == {"name": "now", "parameters": {"type": "object", "properties": {}}}
    assert chat.tool_choice.mode == TOOL_CHOICE_AUTO


@pytest.mark.parametrize("choice, mode, name", [
    ("none", TOOL_CHOICE_NONE, None), ("auto", TOOL_CHOICE_AUTO, None), ("required", TOOL_CHOICE_REQUIRED, None),
    ({"type": "function", "function": {"name": "get_weather"}}, TOOL_CHOICE_NAMED, "get_weather"),
])
def test_tool_choice_values(choice, mode, name):
    chosen = parse(tools=[WEATHER], tool_choice=choice).tool_choice
    assert (chosen.mode, chosen.name) == (mode, name)


def test_tool_choice_none_without_tools_is_fine():
    assert parse(tool_choice="none").tool_choice.mode == TOOL_CHOICE_NONE
    assert parse(tools=[]).tool_choice.mode == TOOL_CHOICE_NONE


def _tool(**function):
    return {"type": "function", "function": {"name": "f", **function}}


@pytest.mark.parametrize("fields, param, code", [
    ({"tools": {"a": 1}}, "tools", "invalid_type"),
    ({"tools": [_tool()] * 129}, "tools", "array_above_max_length"),
    ({"tools": ["f"]}, "tools[0]", "invalid_type"),
    ({"tools": [{"function": {"name": "f"}}]}, "tools[0].type", "missing_required_parameter"),
    ({"tools": [{"type": "custom", "function": {"name": "f"}}]}, "tools[0].type", "invalid_value"),
    ({"tools": [{"type": "function"}]}, "tools[0].function", "missing_required_parameter"),
    ({"tools": [{"type": "function", "function": {"name": "f"}, "x": 1}]}, "tools[0].x", "unknown_parameter"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name", "missing_required_parameter"),
    ({"tools": [_tool(name="get weather")]}, "tools[0].function.name", "invalid_value"),
    ({"tools": [_tool(name="x" * 65)]}, "tools[0].function.name", "invalid_value"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name", "invalid_value"),
    ({"tools": [_tool(description=3)]}, "tools[0].function.description", "invalid_type"),
    ({"tools": [_tool(parameters="{}")]}, "tools[0].function.parameters", "invalid_type"),
    ({"tools": [_tool(parameters={"type": "objekt"})]}, "tools[0].function.parameters", "invalid_value"),
    ({"tools": [_tool(parameters={"type": "object", "required": "city"})]}, "tools[0].function.parameters",
     "invalid_value"),
    ({"tools": [_tool(parameters={"type": "string"})]}, "tools[0].function.parameters", "invalid_value"),
    ({"tools": [_tool(strict="yes")]}, "tools[0].function.strict", "invalid_type"),
    ({"tools": [_tool(returns={})]}, "tools[0].function.returns", "unknown_parameter"),
    ({"tool_choice": "auto"}, "tool_choice", "invalid_value"),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"tools": [WEATHER], "tool_choice": "any"}, "tool_choice", "invalid_value"),
    ({"tools": [WEATHER], "tool_choice": 1}, "tool_choice", "invalid_type"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
     "tool_choice.function.name", "invalid_value"),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "function": {"name": "get_weather"}}},
     "tool_choice.type", "invalid_value"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice.function",
     "missing_required_parameter"),
    ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice", "invalid_value"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls", "invalid_type"),
])
def test_invalid_tools_and_tool_choice(fields, param, code):
    refused_field(param, code, **fields)


def test_a_schema_error_says_where_in_the_schema():
    error = refused_field("tools[0].function.parameters", "invalid_value",
                          tools=[_tool(parameters={"type": "object", "properties": {"a": {"minimum": "x"}}})])
    assert "properties.a.minimum" in error.message


# --- response_format ------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


def test_response_formats():
    assert parse(response_format={"type": "text"}).response_format.type == "text"
    assert parse(response_format={"type": "json_object"}).response_format.type == "json_object"
    fmt = parse(response_format={"type": "json_schema", "json_schema": {
        "name": "answer", "description": "d", "schema": SCHEMA, "strict": True}}).response_format
    assert (fmt.type, fmt.name, fmt.schema, fmt.strict) == ("json_schema", "answer", SCHEMA, True)
    fmt = parse(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}).response_format
    assert fmt.schema == {} and not fmt.strict


def _schema_format(**json_schema):
    return {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, **json_schema}}


@pytest.mark.parametrize("value, param, code", [
    ("json", "response_format", "invalid_type"),
    ({}, "response_format.type", "missing_required_parameter"),
    ({"type": "xml"}, "response_format.type", "invalid_value"),
    ({"type": "json_object", "schema": SCHEMA}, "response_format.schema", "unknown_parameter"),
    ({"type": "json_schema"}, "response_format.json_schema", "missing_required_parameter"),
    ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "response_format.json_schema.name",
     "missing_required_parameter"),
    (_schema_format(name="my answer"), "response_format.json_schema.name", "invalid_value"),
    ({"type": "json_schema", "json_schema": {"name": "a"}}, "response_format.json_schema.schema",
     "missing_required_parameter"),
    (_schema_format(schema=[]), "response_format.json_schema.schema", "invalid_type"),
    (_schema_format(schema={"type": "integer", "minimum": "0"}), "response_format.json_schema.schema",
     "invalid_value"),
    (_schema_format(strict="yes"), "response_format.json_schema.strict", "invalid_type"),
    (_schema_format(description=1), "response_format.json_schema.description", "invalid_type"),
    (_schema_format(extra=1), "response_format.json_schema.extra", "unknown_parameter"),
])
def test_invalid_response_formats(value, param, code):
    refused_field(param, code, response_format=value)


# --- template and serving extras ------------------------------------------------------------------

def test_continue_final_message_needs_a_final_assistant_message_and_no_generation_prompt():
    messages = [*HELLO, {"role": "assistant", "content": "Once upon"}]
    chat = parse_chat_request({"model": "m", "messages": messages, "continue_final_message": True,
                               "add_generation_prompt": False})
    assert chat.continue_final_message and not chat.add_generation_prompt
    refused({"model": "m", "messages": messages, "continue_final_message": True}, "continue_final_message",
            "invalid_value")
    refused_field("continue_final_message", "invalid_value", continue_final_message=True,
                  add_generation_prompt=False)


@pytest.mark.parametrize("fields, param, code", [
    ({"reasoning_effort": "max"}, "reasoning_effort", "invalid_value"),
    ({"reasoning_effort": 1}, "reasoning_effort", "invalid_value"),
    ({"chat_template_kwargs": []}, "chat_template_kwargs", "invalid_type"),
    ({"chat_template_kwargs": {"tools": []}}, "chat_template_kwargs.tools", "invalid_value"),
    ({"chat_template_kwargs": {}, "chat_template_args": {}}, "chat_template_args", "invalid_value"),
    ({"add_generation_prompt": 1}, "add_generation_prompt", "invalid_type"),
    ({"continue_final_message": "no"}, "continue_final_message", "invalid_type"),
    ({"add_special_tokens": None, "echo": "x"}, "echo", "invalid_type"),
    ({"documents": {"a": "b"}}, "documents", "invalid_type"),
    ({"documents": ["text"]}, "documents[0]", "invalid_type"),
    ({"documents": [{"title": "t"}, {"text": 3}]}, "documents[1].text", "invalid_type"),
    ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens", "invalid_value"),
    ({"session_id": ""}, "session_id", "invalid_value"),
    ({"session_id": "s" * 65}, "session_id", "invalid_value"),
    ({"session_id": 12}, "session_id", "invalid_type"),
])
def test_invalid_template_and_serving_extras(fields, param, code):
    refused_field(param, code, **fields)


def test_a_body_that_is_not_an_object_is_refused_without_a_param():
    for body in ([], "x", None, 3):
        refused(body, None)
