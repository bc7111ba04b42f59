"""/api/billing: an organization's balance, ledger, usage and top-ups, for its members and its API keys."""
from django.middleware.csrf import get_token
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.authentication import APIKeyAuthentication
from accounts.api.pagination import ListPagination
from accounts.api.serializers import ErrorSerializer
from accounts.api.views import JSONAlways
from billing.api.permissions import HEADER, BillingAccess, Tenant
from core.serializers import cents_usd
from billing.api.serializers import (BalanceSerializer, LedgerEntrySerializer, LedgerQuerySerializer,
                                     PaymentSerializer, TopupCreatedSerializer, TopupCreateSerializer,
                                     UsageQuerySerializer, UsageSerializer, balance_data)
from billing.api.usage import usage_summary
from billing.models import CreditAccount, LedgerEntry, Payment
from core.errors import APIError

TAGS = ["billing"]
NOT_SIGNED_IN = ("Sign in to manage billing, or send an API key of the organization: "
                 "'Authorization: Bearer YOUR_KEY'.")
ORGANIZATION = OpenApiParameter(
    HEADER, int, OpenApiParameter.HEADER, required=False,
    description="The id of the organization to act for. Optional for a user of one organization; "
                "an API key always acts for its own.")
INVALID = OpenApiResponse(ErrorSerializer, description="An invalid parameter or header; `param` names it.")
UNAUTHORIZED = OpenApiResponse(ErrorSerializer, description="Not signed in and no valid API key.")
FORBIDDEN = OpenApiResponse(ErrorSerializer, description="A change by a member or an API key (read-only), "
                                                          "or a session request without its CSRF token.")
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such organization among the caller's.")
READ_ERRORS = {400: INVALID, 401: UNAUTHORIZED, 404: NOT_FOUND}
WRITE_ERRORS = {**READ_ERRORS, 403: FORBIDDEN}


def billing_schema(**kwargs):
    return extend_schema(tags=TAGS, parameters=[ORGANIZATION, *kwargs.pop("parameters", [])], **kwargs)


class BillingAPIView(APIView):
    authentication_classes = [APIKeyAuthentication, SessionAuthentication]
    permission_classes = [BillingAccess]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]
    content_negotiation_class = JSONAlways
    tenant: Tenant

    @property
    def organization(self):
        return self.tenant.organization

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if isinstance(request.successful_authenticator, SessionAuthentication):
            get_token(request._request)  # the CSRF cookie a browser needs for its next change

    def permission_denied(self, request, message=None, code=None):
        if request.authenticators and not request.successful_authenticator:
            raise APIError(401, NOT_SIGNED_IN, code="not_authenticated")
        super().permission_denied(request, message=message, code=code)

    def query(self, serializer_class) -> dict:
        query = serializer_class(data=request_params(self.request))
        query.is_valid(raise_exception=True)
        return query.validated_data

    def paginate(self, queryset, serializer_class):
        paginator = ListPagination()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)


def request_params(request) -> dict:
    """Query parameters as plain strings (the last value of a repeated one)."""
    return {name: request.query_params.get(name) for name in request.query_params}


class BalanceView(BillingAPIView):
    @billing_schema(operation_id="retrieveBalance", summary="Get the credit balance",
                    responses={200: BalanceSerializer, **READ_ERRORS})
    def get(self, request):
        return Response(balance_data(CreditAccount.objects.filter(organization=self.organization).first()))


class LedgerView(BillingAPIView):
    pagination_class = ListPagination  # read by the schema generator

    @billing_schema(operation_id="listLedgerEntries", summary="List ledger entries",
                    description="Every change of the balance, newest first.",
                    parameters=[LedgerQuerySerializer], responses={200: LedgerEntrySerializer(many=True),
                                                                  **READ_ERRORS})
    def get(self, request):
        kind = self.query(LedgerQuerySerializer).get("kind")
        entries = LedgerEntry.objects.filter(account__organization=self.organization).select_related("created_by")
        if kind:
            entries = entries.filter(kind=kind)
        return self.paginate(entries.order_by("-created_at", "-id"), LedgerEntrySerializer)


class UsageView(BillingAPIView):
    @billing_schema(operation_id="retrieveUsage", summary="Summarize usage",
                    description="Requests, tokens and cost per UTC day, model, API key, or day and model; "
                                "exact to the last request.",
                    parameters=[UsageQuerySerializer], responses={200: UsageSerializer, **READ_ERRORS})
    def get(self, request):
        query = self.query(UsageQuerySerializer)
        return Response(usage_summary(organization=self.organization, **query))


class TopupsView(BillingAPIView):
    pagination_class = ListPagination

    @billing_schema(operation_id="listTopups", summary="List payments",
                    description="Checkout top-ups and auto-recharges, newest first.",
                    responses={200: PaymentSerializer(many=True), **READ_ERRORS})
    def get(self, request):
        payments = Payment.objects.filter(organization=self.organization).select_related("created_by")
        return self.paginate(payments.order_by("-created_at", "-id"), PaymentSerializer)

    @billing_schema(operation_id="createTopup", summary="Start a top-up",
                    description="Opens a Stripe Checkout session; the credit arrives when Stripe confirms the "
                                "payment. Owners and admins only.",
                    request=TopupCreateSerializer,
                    responses={201: TopupCreatedSerializer, **WRITE_ERRORS,
                               502: OpenApiResponse(ErrorSerializer, description="Stripe refused or was unreachable."),
                               503: OpenApiResponse(ErrorSerializer, description="Stripe is not configured.")})
    def post(self, request):
        body = TopupCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        from billing.stripe.checkout import CheckoutFailed, topup_session_create
        from billing.stripe.client import StripeNotConfigured

        try:
            payment, url = topup_session_create(
                organization=self.organization,
                amount_micro=body.validated_data["amount_usd"],
                created_by=request.user,
                success_url=body.validated_data.get("success_url") or self._return_url("success"),
                cancel_url=body.validated_data.get("cancel_url") or self._return_url("cancelled"),
            )
        except StripeNotConfigured:
            raise APIError(503, "Card payments are not available on this server (Stripe is not configured). "
                                "Ask the operator for credit.", type="server_error", code="payments_unavailable")
        except ValueError as exc:
            raise APIError(400, f"'amount_usd': {exc}", param="amount_usd", code="invalid_value")
        except CheckoutFailed as exc:
            raise APIError(502, f"{exc} Nothing was charged; please retry.", type="server_error",
                           code="checkout_failed")
        return Response({"id": payment.pk, "url": url, "amount_usd": cents_usd(payment.amount_cents),
                         "status": payment.status}, status=status.HTTP_201_CREATED)

    def _return_url(self, outcome: str) -> str:
        return self.request.build_absolute_uri(f"/billing/?topup={outcome}")
