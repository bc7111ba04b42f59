"""GET /v1/models and GET /v1/models/{id}: the models this server can answer with now (inference.dispatch.listed_models:
prepared here, or, with the worker queue, served by a live worker)."""
from django.http import JsonResponse

from core.errors import APIError, json_response
from inference.api.auth import authenticate
from inference.availability import ModelUnavailable
from inference.chat.errors import backend_unavailable, model_not_found
from inference.chat.limits import rate_headers
from inference.dispatch import find_model, get_backend, listed_models


async def _model(spec) -> dict:
    """OpenAI's model object, with vLLM's max_model_len: the context window (prompt and completion together) that
    requests for the model are checked against here; absent only when nothing here states it."""
    model = {"id": spec.id, "object": "model", "created": spec.created, "owned_by": spec.owned_by}
    window = await get_backend().served_window(spec)
    if window:
        model["max_model_len"] = window
    return model


async def list_models(request):
    try:
        key = await authenticate(request)
    except APIError as exc:
        return json_response(exc)
    response = JsonResponse({"object": "list", "data": [await _model(spec) for spec in await listed_models()]})
    for name, value in (await rate_headers(key)).items():
        response[name] = value
    return response


async def retrieve_model(request, model_id: str):
    try:
        await authenticate(request)
        try:
            spec = await find_model(model_id)
        except ModelUnavailable as exc:
            raise backend_unavailable(exc) from None
        if spec is None:
            raise model_not_found(model_id)
    except APIError as exc:
        return json_response(exc)
    return JsonResponse(await _model(spec))
