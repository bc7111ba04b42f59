"""POST /v1/chat/completions: auth → validate → hold → dispatch → stream → settle."""
import time
import uuid

from asgiref.sync import sync_to_async
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from billing.services import InsufficientCredit, hold_place, hold_release, price_get
from inference.api import chunks
from inference.api.auth import authenticate
from inference.api.errors import (APIError, generation_failed, insufficient_credit, invalid, model_not_found,
                                  no_capacity, unavailable)
from inference.api.generation import Generation
from inference.api.validation import ChatRequest, parse_body, parse_chat_request
from inference.dispatch import ModelUnavailable, NoCapacity, get_backend
from inference.engine.types import GenerationRequest, SamplingParams
from inference.registry import get_model


def _max_tokens(chat: ChatRequest, prompt_tokens: int, window: int) -> int:
    room = window - prompt_tokens
    if room < 1 or (chat.max_tokens is not None and chat.max_tokens > room):
        asked = chat.max_tokens or 1
        raise invalid(
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in the completion). "
            "Please reduce the length of the messages or completion.",
            "messages",
            "context_length_exceeded",
        )
    return chat.max_tokens or room


def _sampling(chat: ChatRequest, spec, max_tokens: int) -> SamplingParams:
    defaults = spec.sampling_defaults()
    temperature = chat.temperature if chat.temperature is not None else defaults.get("temperature", 1.0)
    top_p = chat.top_p if chat.top_p is not None else defaults.get("top_p", 1.0)
    if top_p == 0:  # keeps only the most likely token: that is greedy decoding
        temperature, top_p = 0.0, 1.0
    return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=chat.seed,
                          stop=chat.stop)


async def _prepare(request, request_id: str, started: float):
    if request.method != "POST":
        raise APIError(405, f"Method {request.method} is not allowed; use POST.", code="method_not_allowed")
    key = await authenticate(request)
    chat = parse_chat_request(parse_body(request.body))
    spec = get_model(chat.model)
    if spec is None or not spec.is_prepared:
        raise model_not_found(chat.model)
    backend = get_backend()
    try:
        prompt_ids, window = await backend.encode_chat(spec, chat.messages)
    except ModelUnavailable as exc:
        raise unavailable(str(exc)) from None
    max_tokens = _max_tokens(chat, len(prompt_ids), window)
    try:
        await backend.check_available(spec)  # refuse before holding credit
    except ModelUnavailable as exc:
        raise _unavailable(exc) from None
    price = await sync_to_async(price_get)(model_id=spec.id, default=spec.default_price)
    try:
        hold = await sync_to_async(hold_place)(
            organization=key.organization, api_key=key, request_id=request_id, model_id=spec.id,
            prompt_tokens=len(prompt_ids), max_tokens=max_tokens, price=price,
        )
    except InsufficientCredit as exc:
        raise insufficient_credit(exc.needed_micro, exc.available_micro) from None
    params = _sampling(chat, spec, max_tokens)
    request = GenerationRequest(request_id, prompt_ids, params)
    try:
        await backend.enqueue(spec, request)  # queued only once it is paid for
    except BaseException as exc:
        await sync_to_async(hold_release)(hold=hold)  # it never ran: nothing charged, no hold left
        if isinstance(exc, ModelUnavailable):
            raise _unavailable(exc) from None
        raise
    generation = Generation(backend=backend, spec=spec, hold=hold, started=started, request=request)
    return chat, generation


def _unavailable(exc: ModelUnavailable) -> APIError:
    if isinstance(exc, NoCapacity):
        return no_capacity(str(exc), exc.code, exc.retry_after)
    return unavailable(str(exc))


@csrf_exempt
async def chat_completions(request):
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    started = time.monotonic()
    try:
        chat, generation = await _prepare(request, request_id, started)
    except APIError as exc:
        response = exc.response()
        response["x-request-id"] = request_id
        return response
    generation.start()
    created = int(time.time())
    if chat.stream:
        writer = chunks.ChunkWriter(id=request_id, created=created, model=chat.model,
                                    include_usage=chat.include_usage)
        response = StreamingHttpResponse(_stream(generation, writer), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
    else:
        response = await _collect(generation, request_id, created, chat.model)
    response["x-request-id"] = request_id
    return response


async def _collect(generation: Generation, request_id: str, created: int, model: str):
    parts = []
    try:
        while True:
            event = await generation.events.get()
            parts.append(event.text)
            if event.finished:
                break
    finally:
        generation.cancel()  # no-op once finished; stops the run if the client went away
    if event.finish_reason not in ("stop", "length"):
        return generation_failed(event).response()
    body = chunks.completion(id=request_id, created=created, model=model, text="".join(parts),
                             finish_reason=event.finish_reason, prompt_tokens=event.prompt_tokens,
                             completion_tokens=event.completion_tokens)
    return JsonResponse(body)


async def _stream(generation: Generation, writer: chunks.ChunkWriter):
    try:
        yield writer.choice({"role": "assistant", "content": ""})
        while True:
            event = await generation.events.get()
            if event.text:
                yield writer.choice({"content": event.text})
            if event.finished:
                break
        if event.finish_reason not in ("stop", "length"):
            yield generation_failed(event).sse()
            return
        yield writer.choice({}, event.finish_reason)
        if writer.include_usage:
            yield writer.usage(event.prompt_tokens, event.completion_tokens)
        yield writer.done()
    finally:
        generation.cancel()
