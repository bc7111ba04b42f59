"""GET /v1/models and GET /v1/models/{id}: the models this server can answer with now."""
from django.http import JsonResponse

from core.catalogue import get_model, served_models
from core.errors import APIError, json_response
from inference.api.auth import authenticate
from inference.chat.errors import model_not_found
from inference.chat.limits import rate_headers


def _model(spec) -> dict:
    return {"id": spec.id, "object": "model", "created": spec.created, "owned_by": spec.owned_by}


async def list_models(request):
    try:
        key = await authenticate(request)
    except APIError as exc:
        return json_response(exc)
    response = JsonResponse({"object": "list", "data": [_model(spec) for spec in served_models()]})
    for name, value in (await rate_headers(key)).items():
        response[name] = value
    return response


async def retrieve_model(request, model_id: str):
    try:
        await authenticate(request)
        spec = get_model(model_id)
        if spec is None or not spec.is_prepared:
            raise model_not_found(model_id)
    except APIError as exc:
        return json_response(exc)
    return JsonResponse(_model(spec))
