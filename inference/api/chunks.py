"""OpenAI's response and stream-chunk shapes for chat completions."""
import dataclasses
import json

SYSTEM_FINGERPRINT = "fp_local_v1"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    """OpenAI's usage object; like OpenAI's, it always has prompt_tokens_details, cached_tokens 0 when none."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8"))


def as_token_ids(logprobs, enabled: bool = True) -> list:
    """vLLM's `return_tokens_as_token_ids`: each token (and each alternative) named "token_id:N" instead of by its
    text, which may not be valid text on its own (a piece of a multi-byte character)."""
    if not enabled:
        return list(logprobs)
    return [dataclasses.replace(lp, token=f"token_id:{lp.token_id}",
                                top=tuple((t, f"token_id:{t}", value) for t, _, value in lp.top)) for lp in logprobs]


def logprobs_content(logprobs) -> list[dict]:
    """TokenLogprob items as OpenAI's `logprobs.content` entries."""
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "bytes": _bytes(lp.token),
            "top_logprobs": [{"token": token, "logprob": value, "bytes": _bytes(token)} for _, token, value in lp.top],
        }
        for lp in logprobs
    ]


def prompt_logprobs(logprobs) -> list[dict | None]:
    """vLLM's `prompt_logprobs`: None for the prompt's first token, then per token a map of token ids (as text) to
    {"logprob", "rank", "decoded_token"} holding the prompt's token and the most likely ones."""
    out: list[dict | None] = [None]
    for lp in logprobs:
        entry = {str(token_id): {"logprob": value, "rank": rank, "decoded_token": token}
                 for rank, (token_id, token, value) in enumerate(lp.top, start=1)}
        entry[str(lp.token_id)] = {"logprob": lp.logprob, "rank": lp.rank, "decoded_token": lp.token}
        out.append(entry)
    return out


def message(content: str | None, tool_calls: list[dict] | None = None) -> dict:
    body = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        body["tool_calls"] = tool_calls
    return body


def completion(*, id: str, created: int, model: str, choices: list[dict], prompt_tokens: int,
               completion_tokens: int, cached_tokens: int = 0, extra: dict | None = None) -> dict:
    """choices: [{"index", "message", "logprobs", "finish_reason"}]."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
        **(extra or {}),
    }


class ChunkWriter:
    """Serialises one stream's chunks; every chunk shares the completion's id and timestamp."""

    def __init__(self, *, id: str, created: int, model: str, include_usage: bool, extra: dict | None = None):
        self._base = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                      "system_fingerprint": SYSTEM_FINGERPRINT, **(extra or {})}
        self.include_usage = include_usage

    def _event(self, payload: dict) -> bytes:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    def choice(self, delta: dict, finish_reason: str | None = None, *, index: int = 0,
               logprobs: list[dict] | None = None, token_ids: list[int] | None = None,
               prompt_token_ids: list[int] | None = None) -> bytes:
        """token_ids (the chunk's tokens) and prompt_token_ids (on the first chunk): vLLM's return_token_ids."""
        choice = {"index": index, "delta": delta,
                  "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
                  "finish_reason": finish_reason}
        if token_ids is not None:
            choice["token_ids"] = token_ids
        payload = {**self._base, "choices": [choice]}
        if prompt_token_ids is not None:
            payload["prompt_token_ids"] = prompt_token_ids
        if self.include_usage:
            payload["usage"] = None
        return self._event(payload)

    def usage(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> bytes:
        return self._event({**self._base, "choices": [],
                            "usage": usage(prompt_tokens, completion_tokens, cached_tokens)})

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"
