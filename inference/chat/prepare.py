"""The checks that need the model, and the engine request they produce.

After `parse_chat_request` has checked everything a body can get wrong on its
own, this module checks what depends on the chosen model (its template, its
vocabulary, its context window, what its grammar engine can compile), renders
the prompt, and turns the request into SamplingParams and a Constraint. It runs
before any credit is held: every refusal here costs the caller nothing.
"""
import asyncio
from dataclasses import dataclass, field

from jinja2 import TemplateError

from inference.availability import ModelUnavailable
from inference.chat.errors import invalid, unavailable
from inference.chat.request import TOOL_CHOICE_NAMED, TOOL_CHOICE_NONE, TOOL_CHOICE_REQUIRED, ChatRequest
from inference.chat.work import check_credit_floor, check_prompt_size, tokenizing
from inference.engine.types import CONSTRAINT_EBNF, Constraint, SamplingParams

# reasoning_effort values that mean "do not think" for templates with an enable_thinking switch.
_NO_THINKING = ("none", "minimal")


@dataclass
class PreparedChat:
    prompts: list[list[int]]  # token ids, one list per prompt (a chat has one; a legacy completion one or more)
    params: SamplingParams
    constraint: Constraint | None
    tool_format: str | None  # set when tool calls are to be parsed out of the output
    echo_prefixes: list[str]  # per prompt: the text put before each of its choices' content (echo), or ""
    # With prompt logprobs, per prompt: the text of its first token (which has no logprob).
    first_tokens: list[str] = field(default_factory=list)

    @property
    def prompt_ids(self) -> list[int]:
        return self.prompts[0]

    @property
    def echo_prefix(self) -> str:
        return self.echo_prefixes[0]

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(prompt) for prompt in self.prompts)


def _unsupported(message: str, param: str) -> Exception:
    return invalid(message, param, "unsupported_parameter")


def _template_kwargs(chat: ChatRequest, tokenizer) -> dict:
    kwargs = dict(chat.chat_template_kwargs)
    if chat.reasoning_effort is not None:
        if not getattr(tokenizer, "supports_thinking", False):
            raise _unsupported(f"Unsupported parameter: 'reasoning_effort' is not supported with the model "
                               f"'{chat.model}': it does not reason before answering.", "reasoning_effort")
        kwargs.setdefault("enable_thinking", chat.reasoning_effort not in _NO_THINKING)
    if "enable_thinking" in kwargs and not getattr(tokenizer, "supports_thinking", False):
        raise _unsupported(f"The model '{chat.model}' has no thinking mode; 'chat_template_kwargs.enable_thinking' "
                           "cannot be honoured.", "chat_template_kwargs.enable_thinking")
    return kwargs


def _check_token_ids(chat: ChatRequest, vocab: int) -> None:
    for token_id in chat.logit_bias:
        if token_id >= vocab:
            raise invalid(f"'logit_bias' names token {token_id}, but this model's vocabulary has {vocab} tokens.",
                          f"logit_bias.{token_id}", "invalid_value")
    for i, token_id in enumerate(chat.stop_token_ids):
        if token_id >= vocab:
            raise invalid(f"'stop_token_ids' names token {token_id}, but this model's vocabulary has {vocab} "
                          "tokens.", f"stop_token_ids[{i}]", "invalid_value")


def _constraint(chat: ChatRequest, tool_format: str | None) -> Constraint | None:
    from inference.engine import grammar_rules  # xgrammar is loaded only for requests that need it

    forced = chat.tools and chat.tool_choice.mode in (TOOL_CHOICE_REQUIRED, TOOL_CHOICE_NAMED)
    fmt = chat.response_format
    if chat.structured is not None:
        if forced:
            raise invalid(f"'{chat.structured.param}' cannot be combined with a 'tool_choice' that forces a tool "
                          "call: the answer would have to be both.", chat.structured.param)
        return _structured_constraint(chat.structured)
    if forced and fmt.type != "text":
        raise invalid("'response_format' cannot be combined with a 'tool_choice' that forces a tool call: the "
                      "answer would have to be both.", "response_format")
    if forced:
        from inference.engine.tools import tool_call_constraint

        try:
            constraint = tool_call_constraint(tool_format, [t.as_openai() for t in chat.tools], chat.tool_choice,
                                              chat.parallel_tool_calls)
            grammar_rules.check_constraint(constraint)
        except ValueError as exc:
            raise invalid(f"The tools' parameter schemas cannot be enforced: {exc}", "tools",
                          "invalid_tool_schema") from None
        return constraint
    if fmt.type == "json_object":
        return grammar_rules.json_object_constraint()
    if fmt.type == "json_schema":
        try:
            constraint = grammar_rules.json_schema_constraint(fmt.schema)
            grammar_rules.check_constraint(constraint)
        except ValueError as exc:
            raise invalid(f"Invalid schema for response_format '{fmt.name}': {exc}",
                          "response_format.json_schema.schema", "invalid_json_schema") from None
        return constraint
    return None


# The error code of a structured output that cannot be compiled, by its kind.
_STRUCTURED_ERRORS = {"json": "invalid_json_schema", "json_object": "invalid_json_schema", "regex": "invalid_regex",
                      "grammar": "invalid_grammar", "choice": "invalid_value"}


def _structured_constraint(structured) -> Constraint:
    from inference.engine import grammar_rules

    kind, value = structured.kind, structured.value
    try:
        if kind == "json":
            constraint = grammar_rules.json_schema_constraint(value)
        elif kind == "json_object":
            constraint = grammar_rules.json_object_constraint()
        elif kind == "regex":
            constraint = grammar_rules.regex_constraint(value)
        elif kind == "choice":
            constraint = grammar_rules.choice_constraint(value)
        else:
            constraint = Constraint(CONSTRAINT_EBNF, value)
        grammar_rules.check_constraint(constraint)
    except ValueError as exc:
        raise invalid(f"'{structured.param}' cannot constrain the output: {exc}", structured.param,
                      _STRUCTURED_ERRORS[kind]) from None
    return constraint


def _max_tokens(chat: ChatRequest, prompt_tokens: int, window: int, param: str) -> int:
    room = window - prompt_tokens
    asked = 1 if chat.max_tokens is None else chat.max_tokens  # 0: a prompt echoed or scored, nothing generated
    if asked > room:
        raise invalid(
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in the completion). "
            "Please reduce the length of the messages or completion.",
            param,
            "context_length_exceeded",
        )
    limit = room if chat.max_tokens is None else chat.max_tokens
    if chat.min_tokens > limit:
        raise invalid(f"'min_tokens' ({chat.min_tokens}) is more than the {limit} tokens this "
                      "request can generate.", "min_tokens", "invalid_value")
    return limit


def _sampling(chat: ChatRequest, spec, max_tokens: int) -> SamplingParams:
    defaults = spec.sampling_defaults()
    temperature = chat.temperature if chat.temperature is not None else defaults.get("temperature", 1.0)
    top_p = chat.top_p if chat.top_p is not None else defaults.get("top_p", 1.0)
    if top_p == 0:  # keeps only the most likely token: that is greedy decoding
        temperature, top_p = 0.0, 1.0
    return SamplingParams(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=chat.top_k or 0, min_p=chat.min_p,
        presence_penalty=chat.presence_penalty, frequency_penalty=chat.frequency_penalty,
        repetition_penalty=chat.repetition_penalty, logit_bias=chat.logit_bias, seed=chat.seed, stop=chat.stop,
        stop_token_ids=chat.stop_token_ids, include_stop_str_in_output=chat.include_stop_str_in_output,
        min_tokens=chat.min_tokens, ignore_eos=chat.ignore_eos, n=chat.n,
        logprobs=chat.top_logprobs if chat.logprobs else None, skip_special_tokens=chat.skip_special_tokens,
        prompt_logprobs=chat.scored_prompt_logprobs,
    )


def _echo_prefixes(chat: ChatRequest, messages: list[dict], tokenizer) -> list[str]:
    if chat.prompts:  # /v1/completions: each prompt itself
        return [("" if not chat.echo else prompt if isinstance(prompt, str) else tokenizer.decode(list(prompt)))
                for prompt in chat.prompts]
    last = messages[-1]
    if chat.echo and last["role"] == "assistant" and isinstance(last.get("content"), str):
        return [last["content"]]
    return [""]


async def prepare(chat: ChatRequest, spec, backend, messages: list[dict], organization) -> PreparedChat:
    """The prompt within its bounds, before anything is held: its size (400), the model's tokenizer (503), a credit
    floor (402), at most API_ORG_TOKENIZING_CHARS being tokenized for the organization at once (429), then
    `prepare_chat`."""
    work_chars = check_prompt_size(chat, messages)
    try:
        tokenizer = await backend.tokenizer(spec)
    except ModelUnavailable as exc:
        raise unavailable(str(exc)) from None
    window = await backend.context_window(spec, tokenizer)
    await check_credit_floor(organization, spec, chat, window)
    async with tokenizing(organization, work_chars):
        return await prepare_chat(chat, spec, tokenizer, messages, window)


def _prompt_params(chat: ChatRequest) -> list[str]:
    """The request parameter each prompt comes from, for error messages."""
    if not chat.prompts:
        return ["messages"]
    return ["prompt"] if len(chat.prompts) == 1 else [f"prompt[{i}]" for i in range(len(chat.prompts))]


def render_prompts(chat: ChatRequest, tokenizer, messages: list[dict]) -> list[list[int]]:
    """Every prompt's token ids (blocking: call it in a thread): a chat's rendered by `render_prompt`, each of a
    /v1/completions request's taken as it is (its text tokenized, or its token ids)."""
    if not chat.prompts:
        return [render_prompt(chat, tokenizer, messages)]
    return [_raw_prompt(chat, prompt, tokenizer, param) for prompt, param in zip(chat.prompts, _prompt_params(chat))]


def render_prompt(chat: ChatRequest, tokenizer, messages: list[dict]) -> list[int]:
    """The prompt's token ids, as the model's chat template renders `messages` with the request's tools, documents
    and template arguments (blocking: call it in a thread), or a 400 naming what the template refused."""
    template_kwargs = _template_kwargs(chat, tokenizer)
    use_tools = bool(chat.tools) and chat.tool_choice.mode != TOOL_CHOICE_NONE
    try:
        prompt_ids = tokenizer.encode_chat(
            messages,
            tools=[t.as_openai() for t in chat.tools] if use_tools else None,
            add_generation_prompt=chat.add_generation_prompt and not chat.continue_final_message,
            continue_final_message=chat.continue_final_message,
            add_special_tokens=chat.add_special_tokens,
            documents=chat.documents,
            template_kwargs=template_kwargs or None,
        )
    except (ValueError, TypeError, KeyError, TemplateError) as exc:  # the template refused these messages
        raise invalid(f"The model's chat template cannot render these messages: {exc}", "messages") from None
    if chat.truncate_prompt_tokens is not None and len(prompt_ids) > chat.truncate_prompt_tokens:
        prompt_ids = prompt_ids[-chat.truncate_prompt_tokens:]
    return prompt_ids


def _raw_prompt(chat: ChatRequest, prompt: str | tuple[int, ...], tokenizer, param: str) -> list[int]:
    if isinstance(prompt, str):
        prompt_ids = tokenizer.hf_tokenizer.encode(prompt, add_special_tokens=chat.add_special_tokens)
    else:
        prompt_ids = list(prompt)
        vocab = len(tokenizer.hf_tokenizer)
        for i, token_id in enumerate(prompt_ids):
            if token_id >= vocab:
                raise invalid(f"'{param}' holds token {token_id}, but this model's vocabulary has {vocab} tokens.",
                              f"{param}[{i}]", "invalid_value")
    if not prompt_ids:
        raise invalid("The prompt is empty: it gives no token to start from.", param, "invalid_value")
    if chat.truncate_prompt_tokens is not None and len(prompt_ids) > chat.truncate_prompt_tokens:
        prompt_ids = prompt_ids[-chat.truncate_prompt_tokens:]
    return prompt_ids


async def prepare_chat(chat: ChatRequest, spec, tokenizer, messages: list[dict], window: int) -> PreparedChat:
    """Everything the engine needs for this request, or a 400 naming what this model cannot do (`window`: the context
    window the engines serving the model give it)."""
    _template_kwargs(chat, tokenizer)  # what the template cannot honour is a 400 before any compile
    _check_token_ids(chat, len(tokenizer.hf_tokenizer))
    use_tools = bool(chat.tools) and chat.tool_choice.mode != TOOL_CHOICE_NONE
    tool_format = tokenizer.tool_format if use_tools else None
    constraint = await asyncio.to_thread(_constraint, chat, tool_format)
    prompts = await asyncio.to_thread(render_prompts, chat, tokenizer, messages)
    max_tokens = min(_max_tokens(chat, len(prompt), window, param)
                     for prompt, param in zip(prompts, _prompt_params(chat)))
    first_tokens = [] if chat.scored_prompt_logprobs is None else \
        [tokenizer.decode(prompt[:1], skip_special_tokens=False) for prompt in prompts]
    return PreparedChat(prompts=prompts, params=_sampling(chat, spec, max_tokens), constraint=constraint,
                        tool_format=tool_format, echo_prefixes=_echo_prefixes(chat, messages, tokenizer),
                        first_tokens=first_tokens)
