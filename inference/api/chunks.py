"""OpenAI's response and stream-chunk shapes for chat completions."""
import json

SYSTEM_FINGERPRINT = "fp_local_v1"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(*, id: str, created: int, model: str, text: str, finish_reason: str, prompt_tokens: int,
               completion_tokens: int) -> dict:
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


class ChunkWriter:
    """Serialises one stream's chunks; every chunk shares the completion's id and timestamp."""

    def __init__(self, *, id: str, created: int, model: str, include_usage: bool):
        self._base = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                      "system_fingerprint": SYSTEM_FINGERPRINT}
        self.include_usage = include_usage

    def _event(self, payload: dict) -> bytes:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    def choice(self, delta: dict, finish_reason: str | None = None) -> bytes:
        payload = {**self._base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                              "finish_reason": finish_reason}]}
        if self.include_usage:
            payload["usage"] = None
        return self._event(payload)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return self._event({**self._base, "choices": [], "usage": usage(prompt_tokens, completion_tokens)})

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"
