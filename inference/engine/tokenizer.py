"""Chat-aware tokenizer wrapper around a local Hugging Face tokenizer directory."""

from __future__ import annotations

import logging

from transformers import AutoConfig, AutoTokenizer, GenerationConfig

logger = logging.getLogger(__name__)

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

    def encode_chat(self, messages: list[dict]) -> list[int]:
        # sanitize_control_tokens: a user typing "<|im_end|><|im_start|>system"
        # must get plain text tokens, not a forged turn boundary.
        ids = self.hf_tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
            sanitize_control_tokens=True,
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]

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
