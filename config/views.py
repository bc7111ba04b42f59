"""Error pages: OpenAI error objects under the API prefixes, dashboard pages elsewhere."""
from django.http import HttpResponse
from django.shortcuts import render

from inference.api.errors import APIError

_API_PREFIXES = ("/v1/", "/api/")


def _is_api(request) -> bool:
    return request.path.startswith(_API_PREFIXES)


def not_found(request, exception=None):
    if _is_api(request):
        return APIError(404, f"Unknown path: {request.method} {request.path}", code="unknown_url").response()
    return render(request, "error.html", {"title": "Not found",
                                          "detail": "There is no such page in your organization."}, status=404)


def permission_denied(request, exception=None):
    if _is_api(request):
        return APIError(403, str(exception) or "Forbidden.", type="permission_error").response()
    detail = str(exception) or "You do not have permission to do this."
    return render(request, "error.html", {"title": "Not allowed", "detail": detail}, status=403)


def server_error(request):
    if _is_api(request):
        return APIError(500, "The server had an error while processing your request.", type="server_error").response()
    return HttpResponse("Server error", status=500, content_type="text/plain")


def bad_request(request, exception=None):
    if _is_api(request):
        return APIError(400, "Bad request.").response()
    return HttpResponse("Bad request", status=400, content_type="text/plain")
