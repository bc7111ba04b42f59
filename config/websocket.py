"""WebSockets of this site's own pages only: the handshake's Origin must be this site's origin exactly.

Channels' AllowedHostsOriginValidator compares only the Origin's host name with ALLOWED_HOSTS, so a
page on another port or scheme of an allowed host (another app on `localhost:4444`, plain http
against an https site) could open the playground's socket with the user's cookie. Here scheme, host
and port must all match the origin the browser used to reach this server, worked out as Django works
it out for CSRF: the Host header (checked against ALLOWED_HOSTS, X-Forwarded-Host with
USE_X_FORWARDED_HOST), https for wss or when SECURE_PROXY_SSL_HEADER says so. Origins listed in
CSRF_TRUSTED_ORIGINS are accepted too, exactly as written (no wildcards). No Origin: refused.
"""
import io
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None for what is not an http(s) origin."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or parts.username:
        return None
    return parts.scheme, parts.hostname, port if port is not None else DEFAULT_PORTS[parts.scheme]


def site_origin(scope) -> str | None:
    """This site's origin for a WebSocket scope, as a page of the site would send it; None for a bad Host."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    request = ASGIRequest({**scope, "type": "http", "method": "GET", "scheme": scheme}, io.BytesIO())
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    return f"{request.scheme}://{host}"


def origin_allowed(scope) -> bool:
    origins = [value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"origin"]
    if len(origins) != 1 or (wanted := _origin_key(origins[0])) is None:
        return False
    allowed = [site_origin(scope), *settings.CSRF_TRUSTED_ORIGINS]
    return any(origin is not None and _origin_key(origin) == wanted for origin in allowed)


class SameOriginValidator:
    """Refuses (HTTP 403 at the handshake) WebSockets whose Origin is not this site's."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
