"""API-key authentication for the /v1 endpoints: accounts.auth, off the event loop.

A missing, malformed, unknown, revoked or expired key raises accounts.auth.KeyRejected, an APIError
(401, `invalid_api_key`) that the views answer like any other.
"""
from asgiref.sync import sync_to_async

from accounts import auth
from accounts.models import APIKey


async def authenticate(request) -> APIKey:
    secret = auth.secret_from(request.headers.get("Authorization"))  # no thread, no query for a bad header
    return await sync_to_async(auth.key_for)(secret)
