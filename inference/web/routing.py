"""The dashboard's WebSocket routes (config/asgi.py wraps them in sessions, auth and an origin check)."""
from django.urls import path

from inference.web.consumer import PlaygroundConsumer

PLAYGROUND_PATH = "ws/playground/"

websocket_urlpatterns = [
    path(PLAYGROUND_PATH, PlaygroundConsumer.as_asgi()),
]
