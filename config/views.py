"""Error pages: OpenAI error objects under the API prefixes, dashboard pages elsewhere."""
import sys

from django.http import HttpResponse
from django.shortcuts import render

from config.middleware import API_PREFIXES, outage_response
from core.errors import handler_response


def _is_api(request) -> bool:
    return request.path.startswith(API_PREFIXES)


def not_found(request, exception=None):
    if _is_api(request):
        return handler_response(request, 404)
    return render(request, "error.html", {"title": "Not found",
                                          "detail": "There is no such page in your organization."}, status=404)


def permission_denied(request, exception=None):
    if _is_api(request):
        return handler_response(request, 403, exception)
    detail = str(exception) or "You do not have permission to do this."
    return render(request, "error.html", {"title": "Not allowed", "detail": detail}, status=403)


def server_error(request):
    # Called while the exception is being handled: the database or Redis unreachable outside a view (a middleware,
    # another error handler) is a 503 too.
    outage = outage_response(request, sys.exc_info()[1])
    if outage is not None:
        return outage
    if _is_api(request):
        return handler_response(request, 500)
    return HttpResponse("Server error", status=500, content_type="text/plain")


def bad_request(request, exception=None):
    if _is_api(request):
        return handler_response(request, 400)
    return HttpResponse("Bad request", status=400, content_type="text/plain")
