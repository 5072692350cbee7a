"""Helpers for the webhook, ConfirmCheckout/CancelCheckout and fulfilment-crash tests.

No pytest dependency (like checkout_support). Events come from the fake
Stripe (`GET /v1/events`, and `/_fake/events/{id}/delivery` for the exact
body and a valid `Stripe-Signature`); tests that need an event the fake
would not send (a late `expired`, an unknown type) forge one from a real
payload and sign it here with HMAC-SHA256, as Stripe does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse

import checkout_support as cs
import paymentsd_harness as h
from checkout_support import checkout_request, create_ok, item

COMPLETED = "checkout.session.completed"
EXPIRED = "checkout.session.expired"
ASYNC_OK = "checkout.session.async_payment_succeeded"
ASYNC_FAILED = "checkout.session.async_payment_failed"


# ---------------------------------------------------------------------------
# Signatures and payloads


def hmac_hex(secret: str, payload: bytes, timestamp: int) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + payload,
                    hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str = h.WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for payload: "t=<ts>,v1=<hmac>"."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={ts},v1={hmac_hex(secret, payload, ts)}"


def forge(payload: bytes, type_: str, *, event_id: str | None = None,
          object_updates: dict | None = None) -> bytes:
    """A new event made from a real one: another id and type, data.object changed."""
    event = json.loads(payload)
    event["id"] = event_id or f"evt_forged{time.monotonic_ns()}"
    event["type"] = type_
    event["data"]["object"].update(object_updates or {})
    return json.dumps(event, indent=2).encode()


def event_id_of(payload: bytes) -> str:
    return json.loads(payload)["id"]


# ---------------------------------------------------------------------------
# Events at the fake


def fake_events(fake: cs.FakeStripeHandle, type_: str | None = None,
                session_id: str | None = None) -> list[dict]:
    """Events at the fake (oldest first), optionally of one type and one session."""
    q = {"limit": "100"}
    if type_:
        q["type"] = type_
    out: list[dict] = []
    while True:
        status, obj = fake._http("GET", "/v1/events?" + urllib.parse.urlencode(q), auth=True)
        assert status == 200, f"GET /v1/events -> {status}: {obj}"
        out.extend(obj["data"])
        if not obj["has_more"] or not obj["data"]:
            break
        q["starting_after"] = obj["data"][-1]["id"]
    if session_id is not None:
        out = [e for e in out if e["data"]["object"].get("id") == session_id]
    return list(reversed(out))


def event_id_for(fake: cs.FakeStripeHandle, session_id: str, type_: str) -> str:
    evs = fake_events(fake, type_, session_id)
    assert len(evs) == 1, (f"test setup: expected one {type_} event for session "
                           f"{session_id[-10:]} at the fake, found {len(evs)}")
    return evs[0]["id"]


def delivery(fake: cs.FakeStripeHandle, event_id: str, secret: str | None = None,
             timestamp: int | None = None) -> tuple[bytes, str]:
    """The fake's webhook delivery of an event: (exact body bytes, Stripe-Signature)."""
    q = {}
    if secret is not None:
        q["secret"] = secret
    if timestamp is not None:
        q["timestamp"] = str(timestamp)
    path = f"/_fake/events/{event_id}/delivery"
    if q:
        path += "?" + urllib.parse.urlencode(q)
    d = fake.control("GET", path)
    return d["payload"].encode("utf-8"), d["signature"]


def session_delivery(fake: cs.FakeStripeHandle, session_id: str, type_: str,
                     **kw) -> tuple[bytes, str]:
    return delivery(fake, event_id_for(fake, session_id, type_), **kw)


# ---------------------------------------------------------------------------
# Calls


def deliver(client: h.Client, payload: bytes, signature: str, **kw):
    """HandleStripeEvent: (Status, EventResult or None)."""
    p = h.pb()
    status, out = client.call("HandleStripeEvent",
                              p.StripeEvent(payload=payload, signature=signature), **kw)
    return status, (p.EventResult.FromString(out) if status.code == p.OK else None)


def deliver_ok(client: h.Client, payload: bytes, signature: str, what: str = "", **kw):
    status, result = deliver(client, payload, signature, **kw)
    assert status.code == h.pb().OK, (
        f"{what + ': ' if what else ''}HandleStripeEvent expected OK, got "
        f"{h.describe_status(status)}")
    return result


def outcome_name(value: int) -> str:
    return h.pb().EventOutcome.Name(value)


def confirm(client: h.Client, deal_id: str = "", payment_id: str = "", **kw):
    p = h.pb()
    return client.call("ConfirmCheckout", p.PaymentRef(deal_id=deal_id, payment_id=payment_id),
                       **kw)


def cancel(client: h.Client, deal_id: str, reason: str = "", **kw):
    return client.call("CancelCheckout", h.pb().CancelRequest(deal_id=deal_id, reason=reason),
                       **kw)


def open_checkout(client: h.Client, deal_id: str, sku: str, quantity: int = 1,
                  unit_amount: int = 1000):
    return create_ok(client, checkout_request(deal_id, [item(sku, quantity, unit_amount)]))


def wait_payment_status(daemon: h.Daemon, deal_id: str, want: int, timeout: float = 15.0):
    """Poll GetPayment until its status is want; returns the last Payment seen."""
    deadline = time.monotonic() + timeout
    while True:
        with h.Client(daemon.socket_path) as c:
            pay = cs.get_payment(c, deal_id=deal_id)
        if pay.status == want or time.monotonic() > deadline:
            return pay
        time.sleep(0.2)


def paid_transitions(client: h.Client, deal_id: str) -> list:
    """Audit rows that moved a payment of the deal to PAID (one per fulfilment)."""
    return [e for e in cs.list_events(client, deal_id) if e.to_status == "PAID"]


def summary(payments) -> list:
    return [(p.payment_id, cs.status_name(p.status), p.order_id) for p in payments]
