#!/usr/bin/env python3
"""Writes the committed seed corpus of `paymentsd-fuzz` (fuzz/corpus/<target>/), from the proto and
real-shaped Stripe JSON: valid messages of every method, edge cases, and inputs the fuzzer would take
long to find (a signed body, a chunked request). `make fuzz` grows its own corpus beside it, out of git.

    python3 scripts/gen-fuzz-corpus.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import paymentsd_harness as h  # noqa: E402  (generates the protobuf module)

from google.protobuf.descriptor import FieldDescriptor as F  # noqa: E402

OUT = os.path.join(ROOT, "fuzz", "corpus")
pb = h.pb()


def fill(message, depth: int = 0):
    """Every field set to a plausible value (strings named like identifiers, small numbers)."""
    for field in message.DESCRIPTOR.fields:
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:
            repeated = field.label == F.LABEL_REPEATED
        if field.type == F.TYPE_MESSAGE:
            if depth > 2:
                continue
            target = getattr(message, field.name).add() if repeated else getattr(message, field.name)
            fill(target, depth + 1)
            continue
        if field.type == F.TYPE_STRING:
            value = {"currency": "usd", "success_url": "https://shop.example/ok",
                     "cancel_url": "https://shop.example/no"}.get(field.name, f"{field.name}-1")
        elif field.type == F.TYPE_BYTES:
            value = b'{"id":"evt_1"}'
        elif field.type == F.TYPE_BOOL:
            value = True
        elif field.type == F.TYPE_ENUM:
            value = field.enum_type.values[min(1, len(field.enum_type.values) - 1)].number
        else:
            value = 2
        if repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    return message


def write(target: str, name: str, data: bytes):
    directory = os.path.join(OUT, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def event(type_: str, obj: dict, event_id: str = "evt_seed") -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": type_, "created": 1700000000, "livemode": False,
                       "data": {"object": obj}}, indent=2).encode()


SESSION = {"id": "cs_test_1", "object": "checkout.session", "status": "complete", "payment_status": "paid",
           "amount_total": 3000, "currency": "usd", "payment_intent": "pi_1", "client_reference_id": "deal-1",
           "url": "https://checkout.stripe.com/c/pay/cs_test_1", "expires_at": 1700001800, "subscription": None,
           "metadata": {"deal_id": "deal-1", "payment_id": "pay_1"}}
REFUND = {"id": "re_1", "object": "refund", "amount": 1000, "status": "succeeded", "payment_intent": "pi_1",
          "failure_reason": None, "metadata": {"refund_id": "rfd_1", "payment_id": "pay_1"}}


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    methods = pb.DESCRIPTOR.services_by_name["Payments"].methods
    envelopes = []
    for index, method in enumerate(methods):
        cls = getattr(pb, method.input_type.name)
        empty, full = cls().SerializeToString(), fill(cls()).SerializeToString()
        write("methods", f"{index:02d}-{method.name}-empty", bytes([index]) + empty)
        write("methods", f"{index:02d}-{method.name}-full", bytes([index]) + full)
        req = pb.Request(request_id=index + 1, method=f"payments.v1.Payments/{method.name}", payload=full,
                         timeout_ms=5000, idempotency_key=f"key-{index}")
        req.headers.add(key="x-trace", value="abc")
        envelopes.append(req.SerializeToString())
        write("envelope", f"{method.name}", envelopes[-1])
    write("envelope", "unknown-method", pb.Request(request_id=7, method="nope/Nope").SerializeToString())
    write("envelope", "empty", b"")

    stream = b"".join(frame(e) for e in envelopes)
    write("frames", "all-methods", bytes([31]) + stream)
    write("frames", "one-byte-chunks", bytes([0]) + stream[:400])
    write("frames", "empty-frame", bytes([7]) + frame(envelopes[0]) + struct.pack(">I", 0))
    write("frames", "too-large", bytes([3]) + struct.pack(">I", 1 << 30) + b"xx")
    write("frames", "cut-off", bytes([5]) + frame(envelopes[1])[:-3])

    secret, ts = b"whsec_fuzz", 1700000000
    body = event("checkout.session.completed", SESSION)
    v1 = hmac.new(secret, str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
    for name, header in {"valid-shape": f"t={ts},v1={'0' * 64}", "two-v1": f"t={ts},v1={'1' * 64},v1={'2' * 64}",
                         "v0-and-v1": f"t={ts},v0={'3' * 64},v1={'4' * 64}", "no-t": f"v1={'5' * 64}",
                         "stale": f"t=1,v1={v1}", "spaces": f" t = {ts} , v1 = {v1} ", "empty": ""}.items():
        write("signature", name, header.encode() + b"\n" + body)

    for type_, obj in {"completed": ("checkout.session.completed", SESSION),
                       "async-succeeded": ("checkout.session.async_payment_succeeded", SESSION),
                       "expired": ("checkout.session.expired", {**SESSION, "status": "expired", "payment_status": "unpaid"}),
                       "refund-updated": ("refund.updated", REFUND),
                       "charge-refunded": ("charge.refunded", {"id": "ch_1", "object": "charge", "payment_intent": "pi_1",
                                                               "refunds": {"object": "list", "data": [REFUND]}}),
                       "subscription": ("customer.subscription.updated",
                                        {"id": "sub_1", "object": "subscription", "status": "active",
                                         "metadata": {"payment_id": "pay_1"}})}.items():
        write("event", type_, event(*obj))
    write("event", "not-an-event", b'{"id": "", "type": ""}')

    error = {"error": {"type": "card_error", "code": "card_declined", "message": "declined", "param": "amount"}}
    page = {"object": "list", "has_more": True, "data": [json.loads(event("checkout.session.completed", SESSION))]}
    for index, (name, obj) in enumerate([("session", SESSION), ("refund", REFUND), ("error", error), ("events", page)]):
        write("stripe-json", name, bytes([index]) + json.dumps(obj).encode())

    post = (b"POST /stripe/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nStripe-Signature: t=1,v1=00\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    write("http", "webhook", post)
    write("http", "pipelined", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    write("http", "chunked", b"POST /stripe/webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n0\r\n\r\n")
    write("http", "head-405", b"HEAD /healthz HTTP/1.0\r\n\r\nDELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    write("http", "bad", b"GET /\x00 HTTP/9\r\n\r\n")
    print(f"wrote {sum(len(files) for _, _, files in os.walk(OUT))} seeds under {OUT}")


if __name__ == "__main__":
    main()
