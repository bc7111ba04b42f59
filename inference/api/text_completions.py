"""POST /v1/completions over HTTP (OpenAI's legacy completions, vLLM's too): one raw prompt or several through
the chat's lifecycle (inference.chat.lifecycle, inference.chat.validate_completion), answered as a
`text_completion`, whole or as server-sent events. Its logprobs take the legacy shape: tokens, token_logprobs,
top_logprobs (each a token -> logprob map holding the sampled token and the most likely ones) and text_offset; with
`echo` they start with the prompt's tokens, the first of which has none (null). vLLM's `prompt_logprobs` come in
each choice, in vLLM's shape."""
import json
import time
import uuid

from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from core.errors import APIError, json_response, sse_event
from inference.api import chunks
from inference.api.responses import gather
from inference.api.completions import admit, refused
from inference.chat.errors import generation_failed
from inference.chat.limits import RequestLimits

_OK = ("stop", "length")


def _logprobs(entries, offset: int, as_ids: bool, out: dict | None = None) -> dict:
    """as_ids: tokens named "token_id:N" (vLLM's return_tokens_as_token_ids); text_offset counts their text still."""
    out = out or {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for lp, named in zip(entries, chunks.as_token_ids(entries, as_ids)):
        out["tokens"].append(named.token)
        out["token_logprobs"].append(lp.logprob)
        # Keyed by text, as OpenAI's: two ids of the same text share one entry; the sampled one keeps its own.
        out["top_logprobs"].append({**{token: value for _, token, value in named.top}, named.token: lp.logprob})
        out["text_offset"].append(offset)
        offset += len(lp.token)
    return out


def _echoed(prepared, p: int, entries, as_ids: bool) -> dict:
    """The legacy logprobs of prompt p echoed: its first token has no logprob, the others theirs."""
    first = prepared.first_tokens[p]
    out = {"tokens": [f"token_id:{prepared.prompts[p][0]}" if as_ids else first], "token_logprobs": [None],
           "top_logprobs": [None], "text_offset": [0]}
    return _logprobs(entries, len(first), as_ids, out)


def _base(chat, created: int) -> dict:
    return {"id": chat.request_id, "object": "text_completion", "created": created, "model": chat.request.model,
            "system_fingerprint": chunks.SYSTEM_FINGERPRINT}


async def _collect(chat, created: int):
    request, prepared, n = chat.request, chat.prepared, chat.request.n
    as_ids = request.return_tokens_as_token_ids
    texts, logprobs, reasons, event, prompt_logprobs, token_ids = await gather(chat.generation, n,
                                                                               prepared.echo_prefixes)
    if event.finish_reason not in _OK:
        return json_response(generation_failed(event))
    choices = []
    for i in range(len(texts)):  # prompt p's choices are p*n .. p*n + n - 1, as OpenAI numbers them
        p = i // n
        choice = {"index": i, "text": texts[i], "logprobs": None, "finish_reason": reasons[i] or event.finish_reason}
        if request.logprobs:
            echoed = _echoed(prepared, p, prompt_logprobs[p * n], as_ids) if request.echo else None
            choice["logprobs"] = _logprobs(logprobs[i], len(prepared.echo_prefixes[p]), as_ids, echoed)
        if request.prompt_logprobs is not None:
            choice["prompt_logprobs"] = chunks.prompt_logprobs(chunks.as_token_ids(prompt_logprobs[p * n], as_ids))
        if request.return_token_ids:
            choice.update(prompt_token_ids=prepared.prompts[p], token_ids=token_ids[i])
        choices.append(choice)
    return JsonResponse({**_base(chat, created), "choices": choices,
                         "usage": chunks.usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)})


async def _stream(chat, created: int):
    """SSE bytes: text chunks per choice, a last chunk with its finish_reason, then with include_usage a usage
    chunk, then [DONE]; a failure after the start ends with its error event, the usage when asked for, [DONE]."""
    request, prepared, generation = chat.request, chat.prepared, chat.generation
    base = _base(chat, created)

    def data(payload: dict) -> bytes:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    n, echoes, as_ids = request.n, prepared.echo_prefixes, request.return_tokens_as_token_ids
    unannounced = set(range(n * len(echoes))) if request.return_token_ids else set()  # prompt_token_ids not sent

    def choice(index: int, text: str, logprobs=None, finish_reason=None, token_ids=()) -> bytes:
        body = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
        if request.return_token_ids:  # vLLM's: the prompt's ids on a choice's first chunk, then each chunk's tokens
            if index in unannounced:
                body["prompt_token_ids"] = prepared.prompts[index // n]
                unannounced.discard(index)
            body["token_ids"] = list(token_ids)
        payload = {**base, "choices": [body]}
        if request.include_usage:
            payload["usage"] = None
        return data(payload)

    total = n * len(echoes)
    offsets = [len(echoes[i // n]) for i in range(total)]
    # With logprobs, a prompt's echo waits for its tokens' logprobs: they come with its first choice's first event.
    waiting = set(range(len(echoes))) if request.echo and request.logprobs else set()
    prompt_logprobs = [[] for _ in echoes]
    try:
        for i in range(total):
            if echoes[i // n] and not waiting:
                yield choice(i, echoes[i // n])
        while True:
            event = await generation.events.get()
            p = event.index // n
            if event.index < total and event.index % n == 0 and p in waiting:
                prompt_logprobs[p].extend(event.prompt_logprobs)
                started = event.text or event.token_ids or event.choice_finish_reason or event.finished
                if started and event.finish_reason in (None, *_OK):
                    echoed = _echoed(prepared, p, prompt_logprobs[p], as_ids)
                    for i in range(p * n, p * n + n):
                        yield choice(i, echoes[p], echoed)
                    waiting.discard(p)
            if event.index < total:
                i = event.index
                logprobs = None
                if request.logprobs and event.logprobs:
                    logprobs = _logprobs(event.logprobs, offsets[i], as_ids)
                    offsets[i] += sum(len(lp.token) for lp in event.logprobs)
                if event.text or logprobs or (request.return_token_ids and event.token_ids):
                    yield choice(i, event.text, logprobs, token_ids=event.token_ids)
                if event.choice_finish_reason in _OK and event.finish_reason in (None, *_OK):
                    yield choice(i, "", None, event.choice_finish_reason)
            if event.finished:
                break
        if event.finish_reason not in _OK:
            yield sse_event(generation_failed(event))
        if request.include_usage:
            yield data({**base, "choices": [],
                        "usage": chunks.usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)})
        yield chunks.ChunkWriter.done()
    finally:
        generation.cancel()


@csrf_exempt
async def completions(request):
    request_id = f"cmpl-{uuid.uuid4().hex}"
    started = time.monotonic()
    limits = RequestLimits()
    try:
        chat = await admit(request, request_id, started, limits, legacy=True)
    except APIError as exc:
        return await refused(exc, limits, request_id)
    chat.generation.start()
    created = int(time.time())
    if chat.request.stream:
        response = StreamingHttpResponse(_stream(chat, created), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
    else:
        response = await _collect(chat, created)
    for name, value in (await limits.headers()).items():
        response[name] = value
    response["x-request-id"] = request_id
    return response
