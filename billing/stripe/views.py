"""The Stripe webhook: a signed event in, its effects applied once (billing.stripe.events), 200 out.

Anything unsigned, stale or malformed is refused with 400 before it is read. A 5xx makes Stripe
deliver the event again later, which is what an event whose effects could not be applied needs.
"""
import logging

import stripe
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from billing.stripe.events import event_apply, event_parse
from core.errors import APIError, json_response

log = logging.getLogger(__name__)


def _error(status: int, message: str, *, code: str, type: str = "invalid_request_error") -> JsonResponse:
    return json_response(APIError(status, message, type=type, code=code))


@csrf_exempt
def webhook(request):
    if request.method != "POST":
        response = _error(405, f"Method {request.method} is not allowed; Stripe posts events here.",
                          code="method_not_allowed")
        response["Allow"] = "POST"
        return response
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        return _error(503, "Stripe webhooks are not configured on this server (STRIPE_WEBHOOK_SECRET is unset).",
                      code="webhook_not_configured", type="server_error")
    try:
        verified = stripe.Webhook.construct_event(request.body, request.headers.get("Stripe-Signature"), secret)
        event = event_parse(verified)
    except stripe.SignatureVerificationError as exc:
        log.warning("Stripe webhook refused: %s", exc)
        return _error(400, f"Invalid Stripe-Signature: {exc}", code="invalid_signature")
    except (ValueError, TypeError, AttributeError) as exc:
        # The library raises AttributeError for a signed body that is JSON but not an object.
        return _error(400, f"The body is not a Stripe event: {exc}", code="invalid_payload")
    applied = event_apply(event=event, source="webhook")
    return JsonResponse({"received": True, "id": event["id"], "type": event["type"], "duplicate": not applied})
