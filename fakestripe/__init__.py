"""fakestripe: a stateful fake of the part of Stripe's API that paymentsd uses.

Run it with ``python3 -m fakestripe --port 0`` (it prints ``fakestripe
listening on http://127.0.0.1:PORT``) or in-process with
``FakeStripe(port=0).start()``. It speaks Stripe's wire formats: nested
form bodies, Stripe's JSON objects, lists and errors, ``Request-Id`` on
every answer, idempotency keys, webhook signatures. Every parameter is
checked against Stripe's own schema (`stripe-api-subset.json`).

Webhooks: with ``--forward-to http://HOST:PORT/PATH`` (``FakeStripe(forward_to=..)``,
or ``POST /_fake/webhooks`` at run time) the fake POSTs every event it emits
to that URL from a background thread, as Stripe does: the event's exact JSON,
``Content-Type: application/json; charset=utf-8``, ``User-Agent: Stripe/1.0
(+https://stripe.com/docs/webhooks)`` and ``Stripe-Signature: t=..,v1=..``
(``--webhook-secret``, the fake's clock). A delivery without a 2xx answer
(or whose connection fails) is retried after 0.2, 0.5, 1, 2, 5, 10, 20 s,
then every 30 s, at most ``--forward-retries`` times (default 10). Off by
default. See `webhooks.py`.

API routes (``Authorization: Bearer <api key>``, default ``sk_test_fake``)::

    POST /v1/checkout/sessions              GET /v1/checkout/sessions[/{id}]
    POST /v1/checkout/sessions/{id}/expire  GET /v1/payment_intents/{id}
    POST /v1/refunds                        GET /v1/refunds[/{id}]
    GET  /v1/events[/{id}]

Control routes (no auth, JSON bodies and answers)::

    POST   /_fake/sessions/{id}/complete      {"paid": true, "payment_method": "card"}
                                              or {"payment_status": "paid"|"unpaid"|"no_payment_required"}
    POST   /_fake/sessions/{id}/async_result  {"succeeded": true}
    POST   /_fake/sessions/{id}/expire        {}
    POST   /_fake/refunds                     {"payment_intent": "pi_..", "amount": 500, "reason": null}
    POST   /_fake/refunds/{id}/resolve        {"status": "succeeded"|"failed", "failure_reason": ".."}
    POST   /_fake/config                      {"refund_status": "pending"|"succeeded",
                                               "subscription_price_amount": 1000, "currency": "usd"}
    GET    /_fake/clock                       POST /_fake/clock {"advance_seconds": 3600}
                                              or {"offset_seconds": -345600} (set back: events in the past)
    POST   /_fake/faults                      {"route": "POST /v1/refunds", "kind": "status",
                                               "status": 500, "times": 2, "headers": {..}}
                                              kinds: status, delay (+ "ms"), apply_then_drop, drop
    GET    /_fake/faults                      DELETE /_fake/faults
    GET    /_fake/events/{id}/delivery?secret=whsec_..&timestamp=..
                                              -> {"payload": "..", "signature": "t=..,v1=.."}
    POST   /_fake/webhooks                    {"url": "http://127.0.0.1:8080/stripe/webhook",
                                               "secret": "whsec_..", "retries": 10}
                                              or {"url": null} (stop; pending deliveries dropped)
                                              -> {"url": .., "retries": .., "pending": 0}
    GET    /_fake/webhooks                    -> the same
    GET    /_fake/webhooks/deliveries?event_id=evt_..
                                              -> {"deliveries": [{"event_id", "event_type",
                                                  "attempt", "url", "status", "error", "at",
                                                  "duration_ms", "outcome", "retry_in"}..],
                                                  "pending": 0}
    GET    /_fake/counters                    GET /_fake/requests
    POST   /_fake/reset                       (webhook forwarding back to its start-up setting)
    GET    /pay/{id}                          the payment page a session's url points to
"""

from .server import FakeStripe

__all__ = ["FakeStripe"]
