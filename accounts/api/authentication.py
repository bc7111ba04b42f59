"""API-key authentication for the /api endpoints (DRF's adapter of accounts.auth): the key's organization is
the tenant."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from accounts import auth
from accounts.auth import BEARER, NO_KEY, SECURITY_SCHEME
from accounts.models import APIKey
from core.errors import WWW_AUTHENTICATE


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
        try:
            key = auth.authenticate(request.headers.get("Authorization"))
        except auth.KeyMissing:
            return None  # the permission check (or the session) answers
        except auth.KeyRejected as exc:
            raise exceptions.AuthenticationFailed(exc.message) from None
        return KeyHolder(key), key

    def authenticate_header(self, request):
        # Present, so that DRF answers 401 (not 403) when authentication fails.
        return WWW_AUTHENTICATE


class HasAPIKey(BasePermission):
    message = NO_KEY

    def has_permission(self, request, view):
        return isinstance(request.auth, APIKey)


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = APIKeyAuthentication
    name = SECURITY_SCHEME

    def get_security_definition(self, auto_schema):
        return dict(BEARER)
