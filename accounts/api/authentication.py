"""API-key authentication for the /api endpoints: the key's organization is the tenant."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from accounts.models import APIKey
from accounts.selectors import api_key_authenticate
from inference.api.openapi import BEARER, SECURITY_SCHEME

SCHEMES = ("bearer", "api-key")


class KeyHolder:
    """Who a request speaks for: an API key of one organization (not a user account)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, key: APIKey):
        self.api_key = key
        self.organization = key.organization

    def __str__(self):
        return f"API key {self.api_key.prefix}… of {self.organization}"


class APIKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer KEY` or `Authorization: Api-Key KEY`."""

    def authenticate(self, request):
        header = request.headers.get("Authorization")
        if not header:
            return None  # the permission check answers 401 with its own message
        scheme, _, secret = header.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() not in SCHEMES or not secret:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: expected 'Bearer YOUR_KEY'.")
        key = api_key_authenticate(secret)
        if key is None:
            shown = secret[:7] + "…" if len(secret) > 7 else "…"
            raise exceptions.AuthenticationFailed(
                f"Incorrect API key provided: {shown}. The key is unknown, revoked or expired."
            )
        return KeyHolder(key), key

    def authenticate_header(self, request):
        # Present, so that DRF answers 401 (not 403) when authentication fails.
        return 'Bearer realm="api"'


class HasAPIKey(BasePermission):
    message = "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'."

    def has_permission(self, request, view):
        return isinstance(request.auth, APIKey)


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = APIKeyAuthentication
    name = SECURITY_SCHEME

    def get_security_definition(self, auto_schema):
        return dict(BEARER)
