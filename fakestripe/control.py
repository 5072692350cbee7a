"""The `/_fake/...` control routes: what tests use to act "at Stripe" and to look inside.

JSON in, JSON out, no authentication. Errors have Stripe's shape. See the
package docstring (``fakestripe/__init__.py``) for the reference table.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

from .errors import StripeError, invalid_request
from .faults import FaultSpecError
from .store import AT_STRIPE
from .webhooks import signature_header
from .wire import Request, Response, dumps

_ROUTES = []


def route(method: str, pattern: str):
    def register(handler):
        _ROUTES.append((method, re.compile(pattern + r"\Z"), handler))
        return handler
    return register


def handle(app, request: Request) -> Response:
    """Run the control route for ``request``; state changes happen under the app's lock."""
    for method, pattern, handler in _ROUTES:
        match = pattern.match(request.path)
        if match and method == request.method:
            try:
                body = _json_body(request.body)
                query = {k: v[-1] for k, v in parse_qs(request.query).items()}
                with app.lock:
                    app.store.expire_due_sessions()
                    return Response.json(200, handler(app, body, query, **match.groupdict()))
            except StripeError as error:
                return Response.json(error.status, error.body())
    return Response.json(404, invalid_request(f"No control route {request.method} {request.path}",
                                              status=404).body())


def _json_body(raw: bytes) -> dict:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise invalid_request(f"The body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise invalid_request("The body must be a JSON object")
    return body


def _field(body: dict, name: str, types, default=None, choices=None):
    """A field of a control body, checked: ``types`` as for isinstance, ``choices`` if given."""
    types = types if isinstance(types, tuple) else (types,)
    value = body.get(name, default)
    # JSON true/false are ints to Python; they count only where a boolean is asked for.
    fits = isinstance(value, types) and (bool in types or not isinstance(value, bool))
    if not fits or (choices is not None and value not in choices):
        expected = f"one of {list(choices)}" if choices else " or ".join(
            "null" if t is type(None) else t.__name__ for t in types)
        raise invalid_request(f"{name} must be {expected}", param=name)
    return value


# -- looking inside ------------------------------------------------------------

@route("POST", r"/_fake/reset")
def reset(app, body, query):
    app.reset()
    return {"reset": True}


@route("GET", r"/_fake/counters")
def counters(app, body, query):
    return app.counters()


@route("GET", r"/_fake/requests")
def requests(app, body, query):
    return {"requests": list(app.request_log)}


@route("GET", r"/_fake/events/(?P<event_id>[^/]+)/delivery")
def delivery(app, body, query, event_id):
    """The webhook delivery of an event: its exact body and a valid signature header."""
    payload = dumps(app.store.event(event_id))
    timestamp = query.get("timestamp", str(app.now()))
    if not re.fullmatch(r"\d+", timestamp):
        raise invalid_request("timestamp must be a unix time in seconds", param="timestamp")
    secret = query.get("secret", app.webhook_secret)
    return {"payload": payload, "signature": signature_header(secret, payload, int(timestamp)),
            "timestamp": int(timestamp)}


@route("GET", r"/_fake/webhooks/deliveries")
def webhook_deliveries(app, body, query):
    """Every forwarding attempt, oldest first (``?event_id=evt_..`` for one event's)."""
    return {"deliveries": app.webhooks.deliveries(query.get("event_id")),
            "pending": app.webhooks.settings()["pending"]}


# -- scripting -----------------------------------------------------------------

@route("GET", r"/_fake/webhooks")
def webhook_settings(app, body, query):
    return app.webhooks.settings()


@route("POST", r"/_fake/webhooks")
def forward_webhooks(app, body, query):
    """Forward every event emitted from now on to ``url`` (``null``: stop, dropping what is
    pending), signed with ``secret`` (default: the fake's webhook secret), retrying a failed
    delivery up to ``retries`` times (default: the fake's ``--forward-retries``)."""
    unknown = set(body) - {"url", "secret", "retries"}
    if unknown:
        raise invalid_request(f"unknown fields {sorted(unknown)}; known: ['retries', 'secret', 'url']")
    if "url" not in body:
        raise invalid_request("url must be given: an http:// URL, or null to stop forwarding",
                              param="url")
    url = _field(body, "url", (str, type(None)))
    secret = _field(body, "secret", str, app.webhook_secret)
    retries = _field(body, "retries", int, app.forward_retries)
    if retries < 0:
        raise invalid_request("retries must not be negative", param="retries")
    try:
        app.webhooks.configure(url, secret, retries)
    except ValueError as error:
        raise invalid_request(str(error), param="url") from None
    return app.webhooks.settings()


@route("POST", r"/_fake/faults")
def add_fault(app, body, query):
    try:
        fault = app.faults.add(body)
    except FaultSpecError as error:
        raise invalid_request(str(error)) from None
    return {"fault": fault.as_json(), "pending": app.faults.pending()}


@route("GET", r"/_fake/faults")
def list_faults(app, body, query):
    return {"pending": app.faults.pending()}


@route("DELETE", r"/_fake/faults")
def clear_faults(app, body, query):
    app.faults.clear()
    return {"pending": []}


@route("POST", r"/_fake/config")
def configure(app, body, query):
    config = app.store.config
    unknown = set(body) - set(config)
    if unknown:
        raise invalid_request(f"unknown config fields {sorted(unknown)}; known: {sorted(config)}")
    updates = {
        "refund_status": _field(body, "refund_status", str, config["refund_status"],
                                ("succeeded", "pending")),
        "subscription_price_amount": _field(body, "subscription_price_amount", int,
                                            config["subscription_price_amount"]),
        "currency": _field(body, "currency", str, config["currency"]).lower(),
    }
    config.update(updates)
    return {"config": config}


@route("GET", r"/_fake/clock")
def clock(app, body, query):
    return {"now": app.now(), "offset_seconds": app.clock_offset}


@route("POST", r"/_fake/clock")
def advance_clock(app, body, query):
    """Move the fake's clock forward (``advance_seconds``): sessions expire, idempotency keys age.

    Or set its offset from real time (``offset_seconds``, may be negative): with the clock set
    back, what happens next (a dashboard refund, a payment) is stamped in the past, like the
    events Stripe made days ago; setting it back expires nothing.
    """
    if ("advance_seconds" in body) == ("offset_seconds" in body):
        raise invalid_request("give one of advance_seconds and offset_seconds", param="advance_seconds")
    if "offset_seconds" in body:
        app.clock_offset = _field(body, "offset_seconds", int)
        app.store.expire_due_sessions()
        return {"now": app.now(), "offset_seconds": app.clock_offset}
    seconds = _field(body, "advance_seconds", int)
    if seconds < 0:
        raise invalid_request("advance_seconds must not be negative", param="advance_seconds")
    app.clock_offset += seconds
    app.store.expire_due_sessions()
    return {"now": app.now(), "offset_seconds": app.clock_offset}


# -- acting at Stripe ----------------------------------------------------------

@route("POST", r"/_fake/sessions/(?P<session_id>[^/]+)/complete")
def complete_session(app, body, query, session_id):
    """The customer completes the session: ``payment_status`` ``paid`` (default), ``unpaid``
    (an async method, settled later by ``async_result``) or ``no_payment_required`` (a
    100%-off code: nothing charged, ``amount_total`` 0). ``paid`` (a boolean) is the older way
    to say ``paid``/``unpaid``; given with ``payment_status`` it must agree."""
    paid = _field(body, "paid", bool, True)
    status = _field(body, "payment_status", (str, type(None)), None,
                    (None, "paid", "unpaid", "no_payment_required"))
    if status is not None:
        if "paid" in body and status != "no_payment_required" and paid != (status == "paid"):
            raise invalid_request(f"paid={str(paid).lower()} contradicts payment_status={status}",
                                  param="paid")
        paid = status == "paid"
    method = _field(body, "payment_method", str, "card")
    return app.store.complete_session(session_id, paid, method, late=_field(body, "late", bool, False),
                                      no_payment_required=status == "no_payment_required")


@route("POST", r"/_fake/sessions/(?P<session_id>[^/]+)/async_result")
def async_result(app, body, query, session_id):
    return app.store.settle_async_payment(session_id, _field(body, "succeeded", bool))


@route("POST", r"/_fake/sessions/(?P<session_id>[^/]+)/expire")
def expire_session(app, body, query, session_id):
    return app.store.expire_session(session_id, AT_STRIPE)


@route("POST", r"/_fake/refunds")
def dashboard_refund(app, body, query):
    """A refund made in Stripe's dashboard: no metadata, no idempotency key."""
    intent = app.store.payment_intent(_field(body, "payment_intent", str), param="payment_intent")
    amount = _field(body, "amount", (int, type(None)))
    if amount is not None and amount < 1:
        raise invalid_request("amount must be a positive integer", param="amount")
    reason = _field(body, "reason", (str, type(None)))
    return app.store.create_refund(intent, amount, reason, {}, AT_STRIPE)


@route("POST", r"/_fake/refunds/(?P<refund_id>[^/]+)/resolve")
def resolve_refund(app, body, query, refund_id):
    status = _field(body, "status", str, choices=("succeeded", "failed"))
    failure_reason = _field(body, "failure_reason", (str, type(None)))
    return app.store.resolve_refund(refund_id, status, failure_reason)
