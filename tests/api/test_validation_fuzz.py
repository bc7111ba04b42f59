"""Property tests of parse_chat_request.

(a) Any JSON value, as the body or as any parameter (or message / tool / format field)
    inside an otherwise valid body, gives a ChatRequest or a 400 APIError whose param
    names a real place in the body; nothing else ever escapes.
(b) Generated valid bodies across the whole surface always parse, and the ChatRequest
    carries what they asked for.

Values past every bound (tests.fuzzing.EDGE_VALUES: 1e999999, 2**64, 10**400, year 9999...) are among the
generated ones. FUZZ_SCALE scales the examples; run with -s to see how many requests were generated in all.
"""
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import APIError
from inference.chat.request import TOOL_CHOICE_AUTO, TOOL_CHOICE_NAMED, TOOL_CHOICE_NONE, ChatRequest
from inference.chat.validation import ACCEPTED, NEUTRAL_ONLY, SEED_RANGE, UNSUPPORTED, parse_chat_request
from tests.fuzzing import SENT, edge_values, examples

FUZZ = settings(max_examples=examples(1000), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
GENERATED = {"requests": 0}
HELLO = [{"role": "user", "content": "hi"}]
MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "refusal", "function_call")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["text", "function", "auto", "none", "user", "assistant", "tool", "object", "json_schema", "0"])
    | edge_values,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _some_of(keys, values=json_values):
    return st.fixed_dictionaries({}, optional={key: values for key in keys})


def _resolve(node, rest: str, missing_leaf: bool) -> bool:
    """Whether `rest` (".a.b[2]" style) walks through node; a missing final key is allowed if missing_leaf."""
    if rest == "":
        return True
    index = re.match(r"\[(\d+)\]", rest)
    if index:
        i = int(index[1])
        return isinstance(node, list) and i < len(node) and _resolve(node[i], rest[index.end():], missing_leaf)
    if not rest.startswith(".") or not isinstance(node, dict):
        return False
    rest = rest[1:]
    for key in node:
        tail = rest[len(key):]
        if rest.startswith(key) and (tail == "" or tail[0] in ".[") and _resolve(node[key], tail, missing_leaf):
            return True
    return missing_leaf and node.get(rest) is None and not re.search(r"[.\[]", rest)


def check(body) -> ChatRequest | None:
    GENERATED["requests"] += 1
    SENT["validator (/v1 bodies)"] += 1
    try:
        return parse_chat_request(body)
    except APIError as error:
        assert error.status == 400 and error.message, error.message
        if error.param is not None:
            assert isinstance(body, dict)
            missing = error.code == "missing_required_parameter"
            assert _resolve(body, "." + error.param, missing), (error.param, error.message)
        return None


# --- (a) anything goes in, only ChatRequest or a 400 comes out ------------------------------------

@FUZZ
@given(json_values)
def test_any_json_value_as_the_body(body):
    check(body)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(ACCEPTED | NEUTRAL_ONLY.keys() | UNSUPPORTED.keys())), json_values,
                       min_size=1, max_size=4))
def test_any_json_value_for_any_parameter(fields):
    check({"model": "m", "messages": HELLO, **fields})


@FUZZ
@given(st.lists(_some_of(MESSAGE_KEYS, json_values | st.sampled_from(
    ["user", "assistant", "tool", "system", "developer", "function"])), min_size=1, max_size=3)
       | st.lists(_some_of(("role", "content")).map(lambda m: {**m, "content": [m.get("content")]}), max_size=3))
def test_any_message_fields(messages):
    check({"model": "m", "messages": messages})


@FUZZ
@given(_some_of(("type", "function")), _some_of(("name", "description", "parameters", "strict")),
       json_values, _some_of(("name", "description", "schema", "strict")), json_values)
def test_any_tool_and_response_format_fields(tool, function, choice, json_schema, fmt):
    body = {"model": "m", "messages": HELLO,
            "tools": [{**tool, "function": {"name": "f", **function}}], "tool_choice": choice,
            "response_format": {"type": "json_schema", "json_schema": json_schema} if fmt is None else fmt}
    check(body)


# --- (b) valid bodies parse and are reflected -----------------------------------------------------

names = st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)
texts = st.text(max_size=20)
labels = st.text(st.characters(exclude_characters="\x00"), max_size=20)  # names and ids: no NUL (a 400)
schemas = st.fixed_dictionaries({"type": st.just("object"), "properties": st.dictionaries(
    names, st.sampled_from([{"type": "string"}, {"type": "integer", "minimum": 0}, {}, {"enum": ["a", 1]}]),
    max_size=3)}, optional={"required": st.lists(names, max_size=2, unique=True)})


@st.composite
def messages(draw):
    sent, want = [], []
    for _ in range(draw(st.integers(1, 5))):
        role = draw(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))
        parts = draw(st.lists(texts, min_size=1, max_size=3) | st.none())
        content = draw(texts) if parts is None else [{"type": "text", "text": t} for t in parts]
        joined = content if parts is None else "\n".join(parts)
        message = {"role": role, "content": content}
        out = {"role": "system" if role == "developer" else role, "content": joined}
        if role == "assistant" and draw(st.booleans()):
            calls = [{"id": draw(texts), "type": "function",
                      "function": {"name": draw(names), "arguments": draw(texts)}}
                     for _ in range(draw(st.integers(1, 3)))]
            message["tool_calls"] = out["tool_calls"] = calls
            if draw(st.booleans()):
                message["content"] = out["content"] = None
        if role == "tool":
            message["tool_call_id"] = out["tool_call_id"] = draw(labels)
        if role != "tool" and draw(st.booleans()):
            message["name"] = out["name"] = draw(labels)
        sent.append(message)
        want.append(out)
    return sent, want


@st.composite
def valid_bodies(draw):
    sent, want_messages = draw(messages())
    body = {"model": draw(st.text(min_size=1, max_size=20)), "messages": sent}
    want = {"messages": want_messages}

    def maybe(name, strategy, field=None, convert=lambda value: value):
        how = draw(st.sampled_from(("omit", "null", "value")))
        if how == "null":
            body[name] = None
        elif how == "value":
            value = draw(strategy)
            body[name] = value
            want[field or name] = convert(value)
            return value
        return None

    number = lambda low, high: st.floats(low, high) | st.integers(int(low), int(high))  # noqa: E731
    maybe("temperature", number(0, 2), convert=float)
    maybe("top_p", number(0, 1), convert=float)
    maybe("top_k", st.integers(-1, 10**6))
    maybe("min_p", number(0, 1), convert=float)
    maybe("repetition_penalty", st.floats(0, 2, exclude_min=True) | st.integers(1, 2), convert=float)
    maybe("presence_penalty", number(-2, 2), convert=float)
    maybe("frequency_penalty", number(-2, 2), convert=float)
    maybe("logit_bias", st.dictionaries(st.integers(0, 2**31 - 1).map(str), number(-100, 100), max_size=5),
          convert=lambda bias: {int(k): float(v) for k, v in bias.items()})
    maybe("n", st.integers(1, 128))
    if maybe("logprobs", st.booleans()):
        maybe("top_logprobs", st.integers(0, 20))
    maybe("seed", st.integers(*SEED_RANGE))
    maybe("stop", st.text(min_size=1) | st.lists(st.text(min_size=1), max_size=32),
          convert=lambda stop: (stop,) if isinstance(stop, str) else tuple(dict.fromkeys(stop)))
    maybe("stop_token_ids", st.lists(st.integers(0, 2**31 - 1), max_size=64), convert=tuple)
    max_tokens = maybe("max_tokens", st.integers(1, 10**9))
    max_completion = maybe("max_completion_tokens", st.integers(1, 10**9))
    limit = max_completion if max_completion is not None else max_tokens
    want.pop("max_completion_tokens", None)
    if limit is not None:
        want["max_tokens"] = limit
    maybe("min_tokens", st.integers(0, limit or 10**6))
    for flag in ("include_stop_str_in_output", "skip_special_tokens", "ignore_eos", "add_special_tokens", "echo",
                 "parallel_tool_calls", "store"):
        maybe(flag, st.booleans())
    if maybe("stream", st.booleans()):
        options = maybe("stream_options", _some_of(("include_usage", "continuous_usage_stats"), st.just(False))
                        | st.fixed_dictionaries({"include_usage": st.booleans()}))
        want.pop("stream_options", None)
        want["include_usage"] = bool(options and options.get("include_usage"))
    maybe("user", texts)
    maybe("metadata", st.dictionaries(st.text(max_size=64), st.text(max_size=512), max_size=16))
    maybe("service_tier", st.sampled_from(["auto", "default"]))
    maybe("modalities", st.just(["text"]))
    for extra, (neutral, _) in NEUTRAL_ONLY.items():
        if neutral and draw(st.booleans()):
            body[extra] = draw(st.sampled_from(neutral))
    tools = maybe("tools", st.lists(st.fixed_dictionaries(
        {"type": st.just("function"), "function": st.fixed_dictionaries(
            {"name": names}, optional={"description": texts, "parameters": schemas, "strict": st.booleans()})}),
        max_size=4, unique_by=lambda tool: tool["function"]["name"]))
    want.pop("tools", None)
    if tools:
        declared = [tool["function"]["name"] for tool in tools]
        choice = maybe("tool_choice", st.sampled_from(["none", "auto", "required"]) | st.sampled_from(declared).map(
            lambda name: {"type": "function", "function": {"name": name}}))
        want.pop("tool_choice", None)
        want["tool_names"] = tuple(declared)
        want["tool_choice_name"] = choice["function"]["name"] if isinstance(choice, dict) else None
        want["tool_choice_mode"] = TOOL_CHOICE_NAMED if isinstance(choice, dict) else choice or TOOL_CHOICE_AUTO
    else:
        want["tool_choice_mode"] = TOOL_CHOICE_NONE
    fmt = maybe("response_format", st.sampled_from([{"type": "text"}, {"type": "json_object"}]) | st.builds(
        lambda name, schema: {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}, names, schemas))
    want.pop("response_format", None)
    want["format_type"] = fmt["type"] if fmt else "text"
    maybe("reasoning_effort", st.sampled_from(["none", "minimal", "low", "medium", "high"]))
    maybe("chat_template_kwargs", st.dictionaries(st.sampled_from(["enable_thinking", "thinking", "style"]),
                                                  st.booleans() | texts, max_size=3))
    maybe("documents", st.lists(st.dictionaries(texts, texts, max_size=3), max_size=3))
    maybe("truncate_prompt_tokens", st.integers(1, 10**6))
    maybe("session_id", st.text(min_size=1, max_size=64))
    if draw(st.booleans()):
        body["messages"].append({"role": "assistant", "content": "Once"})
        want["messages"].append({"role": "assistant", "content": "Once"})
        body["continue_final_message"], body["add_generation_prompt"] = True, False
        want["continue_final_message"], want["add_generation_prompt"] = True, False
    return body, want


IGNORED = {"metadata", "store", "service_tier", "modalities"}


@settings(FUZZ, max_examples=examples(2000))
@given(valid_bodies())
def test_valid_bodies_parse_and_are_reflected(case):
    body, want = case
    chat = check(body)
    assert chat is not None, body
    assert chat.model == body["model"]
    for field, value in want.items():
        if field in IGNORED:
            continue
        if field == "tool_names":
            assert tuple(tool.name for tool in chat.tools) == value
        elif field == "tool_choice_mode":
            assert chat.tool_choice.mode == value
        elif field == "tool_choice_name":
            assert chat.tool_choice.name == value
        elif field == "format_type":
            assert chat.response_format.type == value
        else:
            assert getattr(chat, field) == value, field
    for tool in body.get("tools") or ():
        parsed = next(t for t in chat.tools if t.name == tool["function"]["name"])
        assert parsed.parameters == tool["function"].get("parameters", {"type": "object", "properties": {}})


def test_zz_report_the_number_of_generated_requests():
    print(f"\nvalidation fuzz: {GENERATED['requests']} generated requests checked")
    assert GENERATED["requests"] >= examples(5000)
