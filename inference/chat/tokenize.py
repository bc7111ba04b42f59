"""vLLM's /tokenize and /detokenize apart from HTTP: a prompt's token ids as the model sees them, and text from ids.

Free, but bounded like a chat completion: the caller's requests per minute were counted already; a chat body is
validated as /v1/chat/completions validates it, a prompt is held to API_MAX_PROMPT_CHARS, and the organization's
tokenizing allowance (API_ORG_TOKENIZING_CHARS) applies.

    /tokenize    {"model", "messages", chat template fields...} or {"model", "prompt", "add_special_tokens"}
                 -> {"count", "max_model_len", "tokens", "token_strs"}  (token_strs with "return_token_strs": true)
    /detokenize  {"model", "tokens"} -> {"prompt"}
"""
import asyncio

from django.conf import settings

from accounts.models import APIKey
from core.errors import APIError
from inference.availability import ModelUnavailable
from inference.chat.errors import invalid, unavailable
from inference.chat.lifecycle import resolve_model
from inference.chat.prepare import render_prompt
from inference.chat.validate_fields import array, boolean, integer, missing, string
from inference.chat.validation import parse_chat_request
from inference.chat.work import check_prompt_size, tokenizing
from inference.dispatch import get_backend

# The chat fields that shape a rendered prompt (the rest of a chat completion's body means nothing here).
CHAT_FIELDS = {"model", "messages", "tools", "tool_choice", "chat_template_kwargs", "chat_template_args",
               "reasoning_effort", "add_generation_prompt", "continue_final_message", "add_special_tokens",
               "documents", "truncate_prompt_tokens"}


def _known(body: dict, names) -> None:
    for name in body:
        if name not in names:
            raise invalid(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")


async def tokenize(body: dict, key: APIKey) -> dict:
    _known(body, {*CHAT_FIELDS, "prompt", "return_token_strs"})
    with_strs = body.get("return_token_strs") is not None and boolean(body["return_token_strs"], "return_token_strs")
    if (body.get("messages") is None) == (body.get("prompt") is None):
        raise invalid("Give either 'messages' (a chat, rendered by the model's template) or 'prompt' (plain text).",
                      "messages" if body.get("messages") is None else "prompt", "invalid_value")
    if body.get("prompt") is not None:
        return await _tokenize_prompt(body, key, with_strs)
    chat = parse_chat_request({name: value for name, value in body.items() if name in CHAT_FIELDS})
    chars = check_prompt_size(chat, chat.messages)
    spec = await resolve_model(chat.model, key)
    tokenizer, window = await _tokenizer(spec)
    async with tokenizing(key.organization, chars):
        ids = await asyncio.to_thread(render_prompt, chat, tokenizer, chat.messages)
    return _answer(tokenizer, ids, window, with_strs)


async def _tokenize_prompt(body: dict, key: APIKey, with_strs: bool) -> dict:
    extra = set(body) - {"model", "prompt", "add_special_tokens", "return_token_strs"}
    if extra:
        name = sorted(extra)[0]
        raise invalid(f"'{name}' applies to 'messages', not to a plain 'prompt'.", name, "invalid_value")
    if body.get("model") is None:
        raise missing("model")
    model = string(body["model"], "model", min_length=1)
    limit = settings.API_MAX_PROMPT_CHARS
    prompt = string(body["prompt"], "prompt")
    if len(prompt) > limit:
        raise APIError(400, f"The prompt is {len(prompt)} characters long; at most {limit} characters are accepted.",
                       param="prompt", code="prompt_too_long")
    special = body.get("add_special_tokens")
    special = True if special is None else boolean(special, "add_special_tokens")  # vLLM's default for a prompt
    spec = await resolve_model(model, key)
    tokenizer, window = await _tokenizer(spec)
    async with tokenizing(key.organization, len(prompt)):
        ids = await asyncio.to_thread(tokenizer.hf_tokenizer.encode, prompt, add_special_tokens=special)
    return _answer(tokenizer, ids, window, with_strs)


async def detokenize(body: dict, key: APIKey) -> dict:
    _known(body, {"model", "tokens"})
    if body.get("model") is None:
        raise missing("model")
    if body.get("tokens") is None:
        raise missing("tokens")
    model = string(body["model"], "model", min_length=1)
    tokens = array(body["tokens"], "tokens", max_items=settings.API_MAX_PROMPT_CHARS)
    for i, token in enumerate(tokens):
        integer(token, f"tokens[{i}]", 0)
    spec = await resolve_model(model, key)
    tokenizer, _ = await _tokenizer(spec)
    vocab = len(tokenizer.hf_tokenizer)
    for i, token in enumerate(tokens):
        if token >= vocab:
            raise invalid(f"'tokens[{i}]' is {token}, but this model's vocabulary has {vocab} tokens.", f"tokens[{i}]",
                          "invalid_value")
    async with tokenizing(key.organization, len(tokens)):
        text = await asyncio.to_thread(tokenizer.hf_tokenizer.decode, tokens)
    return {"prompt": text}


async def _tokenizer(spec):
    backend = get_backend()
    try:
        tokenizer = await backend.tokenizer(spec)
    except ModelUnavailable as exc:
        raise unavailable(str(exc)) from None
    return tokenizer, await backend.context_window(spec, tokenizer)


def _answer(tokenizer, ids: list[int], window: int, with_strs: bool) -> dict:
    return {"count": len(ids), "max_model_len": window, "tokens": ids,
            "token_strs": tokenizer.hf_tokenizer.convert_ids_to_tokens(ids) if with_strs else None}
