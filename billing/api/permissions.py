"""Who may read and change an organization's billing.

The organization is resolved by accounts.tenancy (`api_tenant`): signed-in users act for one of their
organizations, named by the `X-Organization` header (or their only one); an API key acts for its own
organization and only reads. Members read; owners and admins change.
"""
from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.tenancy import HEADER, Tenant, api_tenant

__all__ = ["HEADER", "KEY_READ_ONLY", "BillingAccess", "Tenant"]

KEY_READ_ONLY = ("API keys have read-only access to billing. Sign in as an owner or admin of the organization "
                 "to change it.")


class BillingAccess(BasePermission):
    """Authenticated, acting for an organization of theirs (set as `view.tenant`), and allowed to change it."""

    message = None

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False  # the view answers 401
        view.tenant = api_tenant(request)
        if request.method in SAFE_METHODS or view.tenant.can_change:
            return True
        if view.tenant.api_key is not None:
            self.message = KEY_READ_ONLY
        else:
            self.message = (f"Only the organization's owners and admins can change its billing; you are a "
                            f"{view.tenant.role}.")
        return False
