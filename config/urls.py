from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path


async def healthz(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("healthz", healthz),
    path("v1/", include("inference.urls")),
    path("admin/", admin.site.urls),
]

handler400 = "config.views.bad_request"
handler404 = "config.views.not_found"
handler500 = "config.views.server_error"
