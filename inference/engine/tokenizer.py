"""Chat-aware tokenizer wrapper around a local Hugging Face tokenizer directory."""

from __future__ import annotations

import logging
import re
from functools import cached_property

from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from inference.engine.tools.prompt import has_tool_turns, hermes_fallback_messages, native_tool_messages

logger = logging.getLogger(__name__)

# apply_chat_template arguments that template kwargs must not override.
_RESERVED_TEMPLATE_KWARGS = frozenset({
    "conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt",
    "continue_final_message", "tokenize", "sanitize_control_tokens", "padding", "truncation",
    "max_length", "return_tensors", "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs",
})

# Used only when neither the model config nor the tokenizer knows its window;
# tokenizers without one report a ~1e30 sentinel as model_max_length.
DEFAULT_CONTEXT_WINDOW = 2048
_MAX_PLAUSIBLE_WINDOW = 1_000_000


class ChatTokenizer:
    def __init__(self, hf_tokenizer, *, eos_token_ids: frozenset[int], context_window: int) -> None:
        if not getattr(hf_tokenizer, "chat_template", None):
            raise ValueError("tokenizer has no chat template; chat requests cannot be encoded")
        self.hf_tokenizer = hf_tokenizer
        self.eos_token_ids = eos_token_ids
        self.context_window = context_window

    @classmethod
    def from_pretrained(cls, path: str) -> "ChatTokenizer":
        path = str(path)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        config = _optional(lambda: AutoConfig.from_pretrained(path, local_files_only=True))
        gen_config = _optional(lambda: GenerationConfig.from_pretrained(path, local_files_only=True))

        eos: set[int] = set()
        # The chat end-of-turn token may live in only one of these three.
        for owner in (tok, config, gen_config):
            eos.update(_as_id_list(getattr(owner, "eos_token_id", None)))
        if not eos:
            raise ValueError(f"no eos token id found for {path}")

        window = _context_window(config, tok)
        return cls(tok, eos_token_ids=frozenset(eos), context_window=window)

    def encode_chat(
        self,
        messages: list[dict],
        *,
        tools: list[dict] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        add_special_tokens: bool = False,
        documents: list[dict] | None = None,
        template_kwargs: dict | None = None,
    ) -> list[int]:
        """Prompt ids for a conversation; `tools` are OpenAI tool dicts ({"type": "function", "function": ...}).

        Templates that know tools render them (and tool calls and results) themselves;
        for the others the conversation is rewritten in the Hermes tool format first, so
        tool conversations work with any template. `template_kwargs` reach the template
        as variables (e.g. enable_thinking). Raises ValueError for a kwarg that would
        override one of these arguments, or for continue_final_message together with
        add_generation_prompt.
        """
        extra = dict(template_kwargs or {})
        clash = sorted(set(extra) & _RESERVED_TEMPLATE_KWARGS)
        if clash:
            raise ValueError(f"chat template kwargs may not set {', '.join(clash)}")
        tools = list(tools) if tools else None
        if self.renders_tools:
            messages = native_tool_messages(messages)
        elif tools or has_tool_turns(messages):
            messages = hermes_fallback_messages(messages, tools)
            tools = None
        # sanitize_control_tokens: a user typing "<|im_end|><|im_start|>system"
        # must get plain text tokens, not a forged turn boundary.
        ids = self.hf_tokenizer.apply_chat_template(
            messages,
            tools=tools,
            documents=documents or None,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tokenize=True,
            return_dict=False,
            sanitize_control_tokens=True,
            **extra,
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        ids = [int(i) for i in ids]
        if add_special_tokens:
            ids = self._with_special_tokens(ids)
        return ids

    def _template(self) -> str:
        template = self.hf_tokenizer.chat_template
        if isinstance(template, dict):  # named templates: the tool one when there is one
            template = template.get("tool_use") or template.get("default") or next(iter(template.values()))
        return template or ""

    @cached_property
    def renders_tools(self) -> bool:
        """Whether the chat template itself renders a `tools` list."""
        return re.search(r"\btools\b", self._template()) is not None

    @cached_property
    def tool_format(self) -> str:
        """How this model writes tool calls: "llama3" (Llama 3.1-style JSON) or "hermes" (<tool_call> blocks)."""
        template = self._template()
        if not self.renders_tools or "<tool_call>" in template:
            return "hermes"
        if "<|python_tag|>" in template or '"parameters"' in template or "ipython" in template:
            return "llama3"
        return "hermes"

    @cached_property
    def supports_thinking(self) -> bool:
        """Whether the template takes an `enable_thinking` switch."""
        return "enable_thinking" in self._template()

    @cached_property
    def _special_affixes(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer itself adds around a text (BOS/EOS), before and after."""
        plain = list(self.hf_tokenizer.encode("a", add_special_tokens=False))
        full = list(self.hf_tokenizer.encode("a", add_special_tokens=True))
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start], full[start + len(plain):]
        return [], []

    def _with_special_tokens(self, ids: list[int]) -> list[int]:
        prefix, suffix = self._special_affixes
        if prefix and ids[:len(prefix)] != prefix:  # a template that writes BOS itself gets no second one
            ids = prefix + ids
        if suffix and ids[len(ids) - len(suffix):] != suffix:
            ids = ids + suffix
        return ids

    def encode(self, text: str) -> list[int]:
        """Plain text, no special tokens added (for completions-style prompts)."""
        return list(self.hf_tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        # No space clean-up: it rewrites text depending on what follows, which
        # would make incremental deltas disagree with a full decode.
        return self.hf_tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens,
                                        clean_up_tokenization_spaces=False)


def _optional(load):
    try:
        return load()
    except (OSError, ValueError) as exc:
        logger.debug("optional config not loaded: %s", exc)
        return None


def _as_id_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _context_window(config, tok) -> int:
    for cfg in (config, getattr(config, "text_config", None)):
        window = getattr(cfg, "max_position_embeddings", None)
        if isinstance(window, int) and window > 0:
            return window
    window = getattr(tok, "model_max_length", None)
    if isinstance(window, int) and 0 < window <= _MAX_PLAUSIBLE_WINDOW:
        return window
    return DEFAULT_CONTEXT_WINDOW
