"""API keys pages: the organization's keys for every member; creating, limiting and revoking them for managers.

A new key's secret is shown once, in the answer to the POST that created it, and stored nowhere (only its
digest is kept): that answer is not cached, and the page replaces its address with the list's, so a reload
shows the list without it.
"""
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from accounts.models import APIKey
from accounts.services import api_key_create, api_key_revoke
from accounts.web.decorators import manager_required, member_required
from accounts.web.key_forms import KeyCreateForm, KeyLimitsForm
from core.serializers import usd

def key_limits(key: APIKey) -> list[str]:
    """The key's own limits in words, e.g. ["60 requests/min", "25.00 USD per month"]; empty for none."""
    limits = []
    if key.rate_limit_rpm:
        limits.append(f"{key.rate_limit_rpm:,} requests/min")
    if key.rate_limit_tpm:
        limits.append(f"{key.rate_limit_tpm:,} tokens/min")
    if key.spend_cap_micro is not None:
        limits.append(f"{usd(key.spend_cap_micro)} USD per {key.spend_cap_window}")
    return limits


def _keys(organization) -> list[APIKey]:
    now = timezone.now()
    keys = list(APIKey.objects.filter(organization=organization)
                .select_related("created_by").order_by("-created_at", "-pk"))
    for key in keys:
        key.status = key.status_at(now)
        key.limits = key_limits(key)
    return keys


@require_safe
@never_cache
@member_required
def key_list(request):
    return render(request, "dashboard/keys/list.html", {"keys": _keys(request.organization)})


@require_http_methods(["GET", "POST"])
@never_cache
@manager_required
def key_create(request):
    form = KeyCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        key, secret = api_key_create(organization=request.organization, created_by=request.user,
                                     **form.service_arguments())
        new_key = {"name": key.name, "secret": secret}
        return render(request, "dashboard/keys/list.html", {"keys": _keys(request.organization), "new_key": new_key},
                      status=201)
    return render(request, "dashboard/keys/create.html", {"form": form})


def _organizations_key(request, key_id: int) -> APIKey:
    key = APIKey.objects.filter(organization=request.organization, pk=key_id).first()
    if key is None:
        raise Http404("No such API key in this organization.")
    return key


@require_http_methods(["GET", "POST"])
@manager_required
def key_limits_edit(request, key_id: int):
    """Change a key's allowed models and limits; they apply from its next request."""
    key = _organizations_key(request, key_id)
    form = KeyLimitsForm(request.POST or None, key=key)
    if request.method == "POST" and form.is_valid():
        APIKey.objects.filter(pk=key.pk).update(**form.service_arguments())
        messages.success(request, f"The limits of {key.name} ({key.prefix}…) are saved; they apply from its next "
                                  "request.")
        return redirect("keys")
    return render(request, "dashboard/keys/limits.html", {"form": form, "key": key})


@require_POST
@manager_required
def key_revoke(request, key_id: int):
    key = _organizations_key(request, key_id)
    if key.revoked_at is not None:
        messages.info(request, f"The key {key.name} was already revoked.")
    else:
        api_key_revoke(key=key)
        messages.success(request, f"The key {key.name} ({key.prefix}…) is revoked: requests with it now get 401.")
    return redirect("keys")
