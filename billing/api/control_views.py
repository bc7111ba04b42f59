"""/api/billing limits and settings: members and API keys read them, owners and admins change them."""
from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_view
from rest_framework.response import Response

from accounts.api.serializers import ErrorSerializer
from accounts.models import APIKey, Organization
from billing.api.control_serializers import (BillingSettingsSerializer, KeyLimitsSerializer,
                                             OrganizationLimitsSerializer)
from billing.api.views import READ_ERRORS, WRITE_ERRORS, BillingAPIView, billing_schema
from billing.models import BillingProfile
from core.errors import APIError

REARMED_BY = {"auto_recharge_threshold_micro": "auto_recharge_armed", "auto_recharge_enabled": "auto_recharge_armed",
              "low_balance_threshold_micro": "low_balance_armed"}


class OrganizationLimitsView(BillingAPIView):
    http_method_names = ["get", "patch", "head", "options"]

    @billing_schema(operation_id="retrieveOrganizationLimits", summary="Get the organization's rate limits",
                    responses={200: OrganizationLimitsSerializer, **READ_ERRORS})
    def get(self, request):
        return Response(OrganizationLimitsSerializer(self.organization).data)

    @billing_schema(operation_id="updateOrganizationLimits", summary="Change the organization's rate limits",
                    request=OrganizationLimitsSerializer,
                    responses={200: OrganizationLimitsSerializer, **WRITE_ERRORS})
    def patch(self, request):
        body = OrganizationLimitsSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        if body.validated_data:
            Organization.objects.filter(pk=self.organization.pk).update(**body.validated_data)
        return Response(OrganizationLimitsSerializer(Organization.objects.get(pk=self.organization.pk)).data)


KEY_ID = OpenApiParameter("key_id", int, OpenApiParameter.PATH, description="An API key id of the organization.")
KEY_NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such organization, or no such key in it.")


@extend_schema_view(get=billing_schema(parameters=[KEY_ID]), patch=billing_schema(parameters=[KEY_ID]))
class KeyLimitsView(BillingAPIView):
    http_method_names = ["get", "patch", "head", "options"]

    def get_key(self, key_id: str) -> APIKey:
        key = None
        if key_id.isascii() and key_id.isdigit() and len(key_id) <= 18:
            key = APIKey.objects.filter(organization=self.organization, pk=int(key_id)).first()
        if key is None:
            raise APIError(404, f"No API key found with id '{key_id[:40]}'.", code="key_not_found")
        return key

    @billing_schema(operation_id="retrieveKeyLimits", summary="Get an API key's limits",
                    responses={200: KeyLimitsSerializer, **READ_ERRORS, 404: KEY_NOT_FOUND})
    def get(self, request, key_id: str):
        return Response(KeyLimitsSerializer(self.get_key(key_id)).data)

    @billing_schema(operation_id="updateKeyLimits", summary="Change an API key's limits",
                    request=KeyLimitsSerializer,
                    responses={200: KeyLimitsSerializer, **WRITE_ERRORS, 404: KEY_NOT_FOUND})
    def patch(self, request, key_id: str):
        key = self.get_key(key_id)
        body = KeyLimitsSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        if body.validated_data:
            APIKey.objects.filter(pk=key.pk).update(**body.validated_data)
        key.refresh_from_db()
        return Response(KeyLimitsSerializer(key).data)


class BillingSettingsView(BillingAPIView):
    http_method_names = ["get", "patch", "head", "options"]

    @billing_schema(operation_id="retrieveBillingSettings", summary="Get auto-recharge and alert settings",
                    responses={200: BillingSettingsSerializer, **READ_ERRORS})
    def get(self, request):
        profile = (BillingProfile.objects.filter(organization=self.organization).first()
                   or BillingProfile(organization=self.organization))
        return Response(BillingSettingsSerializer(profile).data)

    @billing_schema(operation_id="updateBillingSettings", summary="Change auto-recharge and alert settings",
                    description="Enabling auto-recharge needs a card saved by an earlier Checkout top-up. "
                                "Changing a threshold re-arms its trigger, so the next crossing counts.",
                    request=BillingSettingsSerializer,
                    responses={200: BillingSettingsSerializer, **WRITE_ERRORS})
    def patch(self, request):
        profile = billing_settings_update(organization=self.organization, data=request.data)
        return Response(BillingSettingsSerializer(profile).data)


def billing_settings_update(*, organization: Organization, data) -> BillingProfile:
    """Validate `data` (BillingSettingsSerializer's shape) against the locked profile and save what changed.

    A changed threshold (or enabling) re-arms its trigger. Raises serializers.ValidationError, changing nothing.
    """
    with transaction.atomic():
        BillingProfile.objects.get_or_create(organization=organization)
        profile = BillingProfile.objects.select_for_update().get(organization=organization)
        body = BillingSettingsSerializer(data=data, partial=True, context={"profile": profile})
        body.is_valid(raise_exception=True)
        changed = {name: value for name, value in body.validated_data.items() if getattr(profile, name) != value}
        for name, value in changed.items():
            setattr(profile, name, value)
        for armed in {REARMED_BY[name] for name in changed if name in REARMED_BY}:
            setattr(profile, armed, True)
        if changed:
            profile.save()
    return profile
