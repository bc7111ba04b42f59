"""Error pages: OpenAI error objects under the API prefixes, plain text elsewhere."""
from django.http import HttpResponse

from inference.api.errors import APIError

_API_PREFIXES = ("/v1/", "/api/")


def _is_api(request) -> bool:
    return request.path.startswith(_API_PREFIXES)


def not_found(request, exception=None):
    if _is_api(request):
        return APIError(404, f"Unknown path: {request.method} {request.path}", code="unknown_url").response()
    return HttpResponse("Not found", status=404, content_type="text/plain")


def server_error(request):
    if _is_api(request):
        return APIError(500, "The server had an error while processing your request.", type="server_error").response()
    return HttpResponse("Server error", status=500, content_type="text/plain")


def bad_request(request, exception=None):
    if _is_api(request):
        return APIError(400, "Bad request.").response()
    return HttpResponse("Bad request", status=400, content_type="text/plain")
