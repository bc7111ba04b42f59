"""A chat-completions request once validated: what the rest of the API works from.

`inference.chat.validation.parse_chat_request` builds it from the JSON body; checks
that need the model (its template, window, vocabulary) happen later, in
`inference.chat.prepare`.
"""
from dataclasses import dataclass, field

from inference.engine.tools.calls import TOOL_CHOICE_AUTO, TOOL_CHOICE_NAMED, TOOL_CHOICE_NONE, TOOL_CHOICE_REQUIRED

__all__ = ["TOOL_CHOICE_AUTO", "TOOL_CHOICE_NAMED", "TOOL_CHOICE_NONE", "TOOL_CHOICE_REQUIRED"]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None
    parameters: dict  # a JSON Schema object ({"type": "object", "properties": {}} when the caller gave none)
    strict: bool = False

    def as_openai(self) -> dict:
        """The tool as OpenAI writes it, which is also what chat templates expect."""
        function = {"name": self.name, "parameters": self.parameters}
        if self.description is not None:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolChoice:
    mode: str = TOOL_CHOICE_AUTO  # one of the TOOL_CHOICE_* values
    name: str | None = None  # only with TOOL_CHOICE_NAMED


@dataclass(frozen=True)
class ResponseFormat:
    type: str = "text"  # "text" | "json_object" | "json_schema"
    schema: dict | None = None  # only with "json_schema"
    name: str | None = None
    strict: bool = False


@dataclass(frozen=True)
class StructuredOutput:
    """vLLM's structured outputs (inference.chat.validate_structured)."""

    kind: str  # "json" | "regex" | "choice" | "grammar" | "json_object"
    value: object  # the schema (json), the pattern or grammar text, a tuple of choices; None for json_object
    param: str  # where the request gave it, for errors: "structured_outputs.regex", "guided_choice"...


@dataclass
class ChatRequest:
    model: str
    # Normalised messages, ready for a chat template: {"role", "content"} plus, where given,
    # "name", "tool_calls" ([{"id", "type": "function", "function": {"name", "arguments": str}}])
    # and "tool_call_id". Content arrays of text parts are joined into one string; an assistant
    # message with only tool_calls has content None.
    messages: list[dict]
    max_tokens: int | None = None  # max_completion_tokens, else max_tokens; None: up to the window
    temperature: float | None = None  # None: the model's default
    top_p: float | None = None  # None: the model's default
    top_k: int | None = None  # None or -1/0: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0  # 0..20, only with logprobs
    # vLLM's: every prompt token's logprob (after the first) with this many alternatives (0..20); not in streams.
    prompt_logprobs: int | None = None
    return_tokens_as_token_ids: bool = False  # vLLM's: logprobs name tokens "token_id:N"
    return_token_ids: bool = False  # vLLM's: the prompt's and each choice's token ids in the response
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    ignore_eos: bool = False
    min_tokens: int = 0
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()  # auto when tools are given, else none
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = ResponseFormat()
    structured: StructuredOutput | None = None  # structured_outputs or guided_*
    reasoning_effort: str | None = None
    chat_template_kwargs: dict = field(default_factory=dict)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    documents: list[dict] | None = None
    echo: bool = False
    truncate_prompt_tokens: int | None = None
    session_id: str | None = None
    # POST /v1/completions: the prompts (one or more, each text or token ids), taken as they are (no chat template;
    # `messages` empty). Empty for a chat.
    prompts: tuple[str | tuple[int, ...], ...] = ()

    @property
    def scored_prompt_logprobs(self) -> int | None:
        """How many alternatives each prompt token's logprob comes with (None: the prompt is not scored): vLLM's
        `prompt_logprobs`, else for /v1/completions with `echo` and `logprobs`, the echoed tokens' own."""
        if self.prompt_logprobs is None and self.prompts and self.echo and self.logprobs:
            return self.top_logprobs
        return self.prompt_logprobs
