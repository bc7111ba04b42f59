"""POST /tokenize and POST /detokenize over HTTP (vLLM's; inference.chat.tokenize): the key, its requests per
minute, the body, then the answer as JSON."""
import uuid

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from core.errors import APIError, json_response
from inference.api.auth import authenticate
from inference.api.completions import read_body
from inference.chat import tokenize as tokens
from inference.chat.limits import RequestLimits
from inference.chat.validation import parse_body


def _view(work):
    @csrf_exempt
    async def view(request):
        request_id = f"tok-{uuid.uuid4().hex}"
        limits = RequestLimits()
        try:
            if request.method != "POST":
                raise APIError(405, f"Method {request.method} is not allowed; use POST.", code="method_not_allowed")
            key = await authenticate(request)
            await limits.count_request(key)  # before the body is read, as for a chat completion
            response = JsonResponse(await work(parse_body(read_body(request)), key))
            headers = await limits.headers()
        except APIError as exc:
            response = json_response(exc)
            headers = await limits.headers(exc)
        for name, value in headers.items():
            response[name] = value
        response["x-request-id"] = request_id
        return response

    return view


tokenize = _view(tokens.tokenize)
detokenize = _view(tokens.detokenize)
