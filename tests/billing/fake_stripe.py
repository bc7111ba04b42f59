"""A fake Stripe API on a loopback port, for the official library pointed at it with STRIPE_API_BASE.

It holds customers, Checkout sessions, payment intents, charges and events in memory, reads the
form-encoded bracket syntax the library sends, honours idempotency keys, and answers Stripe-shaped
JSON and errors. Test helpers play the customer's and the bank's part (pay a Checkout, refund a
charge, open a dispute, fail a payment): each stores the Stripe event for /v1/events and returns it,
and `signed` signs an event the way Stripe signs its webhooks. The `fake_stripe` fixture that starts one for a
test is in tests/plugins/fake_stripe.py.
"""
import copy
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.test import Client

API_KEY = "sk_test_fake"
WEBHOOK_SECRET = "whsec_test_fake"
WEBHOOK_URL = "/billing/stripe/webhook"
DECLINES = {  # test cards, as Stripe's own test payment methods behave
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_authenticationRequired": ("authentication_required", "authentication_required",
                                       "Your card was declined. This transaction requires authentication."),
}


class StripeError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", **fields):
        super().__init__(message)
        self.status, self.body = status, {"error": {"type": type, "message": message, **fields}}


def parse_form(pairs) -> dict:
    """`a[b][0][c]=x` pairs into nested dicts and lists, as Stripe reads them."""
    root: dict = {}
    for key, value in pairs:
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        if not match:
            raise StripeError(400, f"Invalid parameter name: {key}")
        names = [match[1], *re.findall(r"\[([^\[\]]*)\]", match[2])]
        node = root
        for name in names[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise StripeError(400, f"Invalid parameter: {key}", param=key)
        node[names[-1]] = value

    def lists(node):
        if not isinstance(node, dict):
            return node
        if node and all(k.isdigit() for k in node):
            return [lists(node[k]) for k in sorted(node, key=int)]
        return {k: lists(v) for k, v in node.items()}

    return lists(root)


def _int(params: dict, name: str, minimum: int = 0) -> int:
    value = params.get(name)
    if value is None:
        raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    if not str(value).isdigit() or int(value) < minimum:
        raise StripeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name)
    return int(value)


def signature(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header: t=<unix>,v1=hex(hmac_sha256(secret, "<t>.<body>"))."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={hmac.new(secret.encode(), f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"


def signed(event: dict, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> tuple[bytes, str]:
    """The event's body and its Stripe-Signature header."""
    body = json.dumps(event).encode()
    return body, signature(body, secret, timestamp)


class FakeStripe:
    def __init__(self, api_key: str = API_KEY):
        self.api_key = api_key
        self.lock = threading.RLock()
        self.objects: dict[str, dict] = {}  # every object by id
        self.private: dict[str, dict] = {}  # what a session keeps for its payment intent
        self.events: list[dict] = []  # oldest first
        self.requests: list[tuple[str, str, dict]] = []
        self.idempotent: dict[str, tuple[dict, int, dict]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def of(self, kind: str) -> list[dict]:
        return [copy.deepcopy(o) for o in self.objects.values() if o["object"] == kind]

    def _new(self, prefix: str, kind: str, **fields) -> dict:
        obj = {"id": f"{prefix}_{secrets.token_hex(12)}", "object": kind, "created": int(time.time()),
               "livemode": False, "metadata": {}, **fields}
        self.objects[obj["id"]] = obj
        return obj

    def _get(self, object_id: str, kind: str) -> dict:
        obj = self.objects.get(object_id)
        if obj is None or obj["object"] != kind:
            raise StripeError(404, f"No such {kind.split('.')[-1]}: '{object_id}'", code="resource_missing",
                              param="id")
        return obj

    def _event(self, type: str, obj: dict) -> dict:
        event = {"id": f"evt_{secrets.token_hex(12)}", "object": "event", "api_version": "2025-01-27.acacia",
                 "created": int(time.time()), "livemode": False, "pending_webhooks": 1, "type": type,
                 "request": {"id": None, "idempotency_key": None}, "data": {"object": copy.deepcopy(obj)}}
        self.events.append(event)
        return copy.deepcopy(event)

    # The API.

    def create_customer(self, params: dict) -> dict:
        return self._new("cus", "customer", name=params.get("name"), email=params.get("email"),
                         metadata=params.get("metadata", {}), invoice_settings={"default_payment_method": None})

    def create_session(self, params: dict) -> dict:
        for name in ("mode", "success_url", "line_items"):
            if not params.get(name):
                raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        if params.get("customer"):
            self._get(params["customer"], "customer")
        items = params["line_items"]
        if not isinstance(items, list) or not all(isinstance(i, dict) and "price_data" in i for i in items):
            raise StripeError(400, "Each line item needs price_data.", param="line_items")
        total = sum(_int(i["price_data"], "unit_amount", 1) * _int(i, "quantity", 1) for i in items)
        session = self._new(
            "cs_test", "checkout.session", mode=params["mode"], customer=params.get("customer"),
            client_reference_id=params.get("client_reference_id"), metadata=params.get("metadata", {}),
            currency=items[0]["price_data"].get("currency"), amount_subtotal=total, amount_total=total,
            payment_intent=None, payment_status="unpaid", status="open", success_url=params["success_url"],
            cancel_url=params.get("cancel_url"), expires_at=int(time.time()) + 86400,
        )
        session["url"] = f"https://checkout.stripe.com/c/pay/{session['id']}"
        self.private[session["id"]] = params.get("payment_intent_data", {})
        return session

    def create_intent(self, params: dict) -> dict:
        amount = _int(params, "amount", 50)
        if params.get("customer"):
            self._get(params["customer"], "customer")
        method = params.get("payment_method")
        if method and not method.startswith("pm_"):
            raise StripeError(404, f"No such PaymentMethod: '{method}'", code="resource_missing",
                              param="payment_method")
        intent = self._intent(amount, params.get("currency", "usd"), params.get("customer"), method,
                              params.get("metadata", {}), params.get("setup_future_usage"))
        if params.get("confirm") == "true":
            self._confirm(intent)
        return intent

    def _intent(self, amount, currency, customer, method, metadata, setup_future_usage) -> dict:
        return self._new("pi", "payment_intent", amount=amount, amount_received=0, currency=currency,
                         customer=customer, payment_method=method, metadata=metadata, latest_charge=None,
                         setup_future_usage=setup_future_usage, last_payment_error=None,
                         status="requires_confirmation" if method else "requires_payment_method")

    def _confirm(self, intent: dict) -> None:
        if not intent["payment_method"]:
            raise StripeError(400, "You cannot confirm this PaymentIntent without a payment method.",
                              code="payment_intent_unexpected_state")
        decline = DECLINES.get(intent["payment_method"])
        if decline:
            code, decline_code, message = decline
            error = {"type": "card_error", "code": code, "decline_code": decline_code, "message": message}
            intent.update(status="requires_payment_method", last_payment_error=error)
            self._event("payment_intent.payment_failed", intent)
            raise StripeError(402, message, type="card_error", code=code, decline_code=decline_code,
                              payment_intent=copy.deepcopy(intent))
        charge = self._new("ch", "charge", amount=intent["amount"], amount_captured=intent["amount"],
                           amount_refunded=0, refunded=False, paid=True, status="succeeded",
                           currency=intent["currency"], customer=intent["customer"], payment_intent=intent["id"],
                           payment_method=intent["payment_method"], metadata=intent["metadata"])
        intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"])
        self._event("charge.succeeded", charge)
        self._event("payment_intent.succeeded", intent)

    def list_events(self, params: dict) -> dict:
        limit = min(_int(params, "limit", 1) if "limit" in params else 10, 100)
        since = _int(params["created"], "gte") if isinstance(params.get("created"), dict) else 0
        types = set(params.get("types") or ([params["type"]] if params.get("type") else []))
        events = [e for e in reversed(self.events) if e["created"] >= since and (not types or e["type"] in types)]
        if params.get("starting_after"):
            ids = [e["id"] for e in events]
            events = events[ids.index(params["starting_after"]) + 1:] if params["starting_after"] in ids else []
        return {"object": "list", "url": "/v1/events", "has_more": len(events) > limit, "data": events[:limit]}

    # The customer's and the bank's part.

    def _pay_session(self, session_id: str, payment_method: str) -> dict:
        session = self._get(session_id, "checkout.session")
        data = self.private[session_id]
        intent = self._intent(session["amount_total"], session["currency"], session["customer"], payment_method,
                              data.get("metadata", {}), data.get("setup_future_usage"))
        session["payment_intent"] = intent["id"]
        self._confirm(intent)
        session.update(status="complete", payment_status="paid")
        return self._event("checkout.session.completed", session)

    def complete_checkout(self, session_id: str, *, payment_method: str = "pm_card_visa") -> dict:
        """The customer pays: the payment intent succeeds, the session completes; its completed event."""
        with self.lock:
            return self._pay_session(session_id, payment_method)

    def fail_checkout_payment(self, session_id: str, *, payment_method: str = "pm_card_chargeDeclined") -> dict:
        """The customer's card is declined on the Checkout page; its payment_intent.payment_failed event."""
        with self.lock:
            with pytest.raises(StripeError):
                self._pay_session(session_id, payment_method)
            return copy.deepcopy(self.events[-1])

    def refund(self, charge_id: str, amount_cents: int | None = None) -> dict:
        """Refund part or all of what is left of a charge; its charge.refunded event."""
        with self.lock:
            charge = self._get(charge_id, "charge")
            left = charge["amount"] - charge["amount_refunded"]
            amount = left if amount_cents is None else amount_cents
            assert 0 < amount <= left, f"cannot refund {amount} of a charge with {left} left"
            self._new("re", "refund", amount=amount, charge=charge_id, payment_intent=charge["payment_intent"],
                      status="succeeded")
            charge.update(amount_refunded=charge["amount_refunded"] + amount,
                          refunded=charge["amount_refunded"] + amount == charge["amount"])
            return self._event("charge.refunded", charge)

    def dispute(self, charge_id: str, *, reason: str = "fraudulent") -> dict:
        """The cardholder disputes the charge with their bank; its charge.dispute.created event."""
        with self.lock:
            charge = self._get(charge_id, "charge")
            dispute = self._new("du", "dispute", amount=charge["amount"], currency=charge["currency"],
                                charge=charge_id, payment_intent=charge["payment_intent"], reason=reason,
                                status="needs_response")
            return self._event("charge.dispute.created", dispute)

    def event_of(self, type: str, object_id: str) -> dict:
        return copy.deepcopy(next(e for e in reversed(self.events)
                                  if e["type"] == type and e["data"]["object"]["id"] == object_id))

    def answer(self, method: str, url: str, headers, body: bytes) -> tuple[int, dict]:
        with self.lock:
            if headers.get("Authorization") != f"Bearer {self.api_key}":
                return 401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided."}}
            path, key, params = urlsplit(url).path, headers.get("Idempotency-Key"), {}
            try:
                params = parse_form(parse_qsl(urlsplit(url).query if method == "GET" else body.decode(),
                                              keep_blank_values=True))
                self.requests.append((method, path, params))
                if method == "POST" and key and key in self.idempotent:
                    first, status, answer = self.idempotent[key]
                    if first != params:
                        raise StripeError(400, "Keys for idempotent requests can only be used with the same "
                                          "parameters they were first used with.", type="idempotency_error")
                    return status, answer
                status, answer = self._route(method, path, params)
            except StripeError as exc:
                status, answer = exc.status, exc.body
            if method == "POST" and key:
                self.idempotent.setdefault(key, (params, status, answer))
            return status, copy.deepcopy(answer)

    def _route(self, method: str, path: str, params: dict) -> tuple[int, dict]:
        kinds = {"customers": "customer", "checkout/sessions": "checkout.session", "payment_intents": "payment_intent"}
        create = {"customers": self.create_customer, "checkout/sessions": self.create_session,
                  "payment_intents": self.create_intent}
        match = re.fullmatch(r"/v1/(customers|checkout/sessions|payment_intents|events)(?:/([^/]+))?", path)
        if match and (method, match[1], match[2]) == ("GET", "events", None):
            return 200, self.list_events(params)
        if match and method == "POST" and match[1] in create and match[2] is None:
            return 200, create[match[1]](params)
        if match and method == "GET" and match[1] in kinds and match[2]:
            return 200, self._get(match[2], kinds[match[1]])
        raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")


def _handler(fake: FakeStripe):
    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, answer = fake.answer(self.command, self.path, self.headers, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                                ("Request-Id", f"req_{secrets.token_hex(7)}")):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    return Handler


def deliver(event: dict, *, secret: str = WEBHOOK_SECRET, client: Client | None = None):
    """Post the event to the webhook signed as Stripe signs it; the response."""
    body, header = signed(event, secret)
    return (client or Client()).post(WEBHOOK_URL, data=body, content_type="application/json",
                                     HTTP_STRIPE_SIGNATURE=header)
