"""ASGI entry point: HTTP (API, dashboard, admin, static files) and WebSockets (the playground)."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs apps loaded)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from config.websocket import SameOriginValidator  # noqa: E402

from config.middleware import BodyLimitMiddleware  # noqa: E402

# With SERVE_STATIC (the default) this process answers STATIC_URL itself, also with DEBUG off:
# the admin's CSS and the API docs' Swagger UI load under a bare uvicorn. Only HTTP is wrapped.
http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app
# Bodies past API_MAX_BODY_BYTES get 413 before Django reads them (which it would do whole, before any view).
http_app = BodyLimitMiddleware(http_app)

# The embedded default runs the periodic billing jobs here (PERIODIC_IN_PROCESS; see config/periodic.py).
from config.periodic import start_in_process  # noqa: E402

periodic = start_in_process()

# Imported before the warm start's thread begins: two threads importing the same packages at once can deadlock in
# Python's import locks (the server then never starts).
from inference.web.routing import websocket_urlpatterns  # noqa: E402

# Warm start (INFERENCE_WARM_START, on by default): a background thread loads what the first request needs (the
# embedded engine, with its warm-up requests, or the models' tokenizers). uvicorn runs with --lifespan off, so it
# starts here, as the application is created: /livez answers at once, /readyz once it is done (config/probes.py),
# and a request arriving before that waits for what it needs.
from inference.dispatch import start_warm_start  # noqa: E402

warm_start = start_warm_start()

application = ProtocolTypeRouter({
    "http": http_app,
    # The playground's chat: the session cookie's user, pages of this site only (Origin: this site's exactly).
    "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
