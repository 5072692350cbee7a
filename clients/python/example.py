#!/usr/bin/env python3
"""A walk through paymentsd's API, as a sibling service would use it.

    PYTHONPATH=/tmp/paymentsd-pb python3 clients/python/example.py [SOCKET]

SOCKET defaults to $PAYMENTSD_SOCKET, then /run/paymentsd/paymentsd.sock.
The directory on PYTHONPATH holds the generated payments/v1/payments_pb2.py
(README.md says how to make it).

It sets stock for a SKU, opens a checkout for a deal with an idempotency key,
sends the same call again (same payment back), reads the payment, and shows
two error answers handled by their reason. Every step prints one line.
Exit status: 0 when everything answered as expected, 1 otherwise, 69 when the
daemon cannot be reached, 2 when the generated module is missing.

SetStock is an admin method (protocol.md section 6): root, the daemon's own
uid or PAYMENTSD_ADMIN_GIDS. A caller that is not one gets
PERMISSION_DENIED caller_not_allowed; the example then skips the stock steps.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time

try:
    from paymentsd_client import (DEFAULT_SOCKET, PaymentsClient, PaymentsError,
                                  TransportError, enum_name)
    from payments.v1 import payments_pb2 as pb
except ImportError as e:  # almost always: the generated module is not on PYTHONPATH
    print(f"example: {e}\n  generate payments_pb2 from proto/ and put its directory "
          f"on PYTHONPATH (see clients/python/README.md)", file=sys.stderr)
    sys.exit(2)


class SoldOut(Exception):
    """Not enough stock of one SKU for the checkout."""

    def __init__(self, sku: str):
        super().__init__(sku)
        self.sku = sku


class Unexpected(Exception):
    """An answer the example did not expect: exit status 1."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Unexpected(what)


def open_checkout(client: PaymentsClient, request, idempotency_key: str):
    """Open (or get back) the deal's checkout, as a shop's handler would.

    The point is the branching on `reason`: codes are coarse (several reasons
    share FAILED_PRECONDITION), reasons are the stable contract.
    """
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            # CreateCheckout may call Stripe (with retries of its own): give it time.
            return client.create_checkout(request, idempotency_key=idempotency_key,
                                          timeout_ms=20_000)
        except PaymentsError as e:
            if e.reason == "insufficient_stock":
                raise SoldOut(e.details.get("sku", "?")) from e    # details name the SKU
            if e.reason == "checkout_in_progress":
                # The deal has an open checkout with other items: cancel it first
                # (CancelCheckout) or ask for on_open=ON_OPEN_REPLACE.
                raise
            if e.retryable and attempt < attempts:
                # stripe_unavailable, database_busy, ...: nothing was half-done,
                # and the same key makes the resend safe.
                time.sleep(0.5 * attempt)
                continue
            raise
        except TransportError:
            # No answer at all (the daemon restarting?): the first call may or may
            # not have run; thanks to the key, resending cannot open a second one.
            if attempt < attempts:
                time.sleep(0.5 * attempt)
                continue
            raise
    raise AssertionError("unreachable")


def checkout_request(deal_id: str, sku: str, quantity: int):
    req = pb.CreateCheckoutRequest(
        deal_id=deal_id,
        customer_ref="customer-42",   # your opaque id of the customer: never an e-mail or a name
        mode=pb.MODE_PAYMENT,
        currency="eur",               # lowercase ISO-4217; amounts in minor units (cents)
        success_url="https://shop.example/checkout/success",
        cancel_url="https://shop.example/checkout/cancel",
        on_open=pb.ON_OPEN_RETURN_EXISTING)
    req.items.add(sku=sku, name="Example mug", quantity=quantity, unit_amount=1250)
    return req


def run(client: PaymentsClient) -> None:
    # Fresh names on every run: deals and idempotency keys live on in the
    # daemon's database (keys for 24 h), so a second run against the same
    # daemon with fixed names would replay the first run's answers.
    run_id = secrets.token_hex(4)
    deal_id, sku = f"example-{run_id}", f"example-mug-{run_id}"

    health = client.health()
    expect(health.status == pb.SERVING_STATUS_SERVING, f"Health answered {health}")
    print(f"health: {enum_name(pb.ServingStatus, health.status)} (paymentsd {health.version})")

    # 1. Stock (admin only). Keys are per caller uid and shared by all methods,
    #    so each operation gets its own key: "<what>-<which>".
    stock_tracked = True
    try:
        stock = client.set_stock(sku, 5, idempotency_key=f"set-stock-{sku}-5")
        expect((stock.on_hand, stock.available) == (5, 5), f"SetStock answered {stock}")
        print(f"stock: {stock.sku} on_hand={stock.on_hand} available={stock.available}")
    except PaymentsError as e:
        if e.reason != "caller_not_allowed":
            raise
        stock_tracked = False
        print(f"stock: skipped, this uid may not call SetStock ({e.code_name} {e.reason})")

    # 2. A checkout for the deal. The key identifies this *attempt to check out*:
    #    derive it from something you store (the deal id), not from a clock.
    request = checkout_request(deal_id, sku, quantity=2)
    key = f"checkout-{deal_id}"
    payment = open_checkout(client, request, key)
    expect(payment.status == pb.PAYMENT_STATUS_CREATED and payment.checkout_url,
           f"CreateCheckout answered {payment}")
    print(f"checkout: {payment.payment_id} {enum_name(pb.PaymentStatus, payment.status)} "
          f"{payment.amount_total} {payment.currency}, pay at {payment.checkout_url}")

    # 3. The same call with the same key (say our process retried after a
    #    timeout): the stored first response, so the same payment and URL and
    #    no second Stripe session. It is a snapshot of that moment, even
    #    `created` stays true: ask GetPayment for the current state.
    again = open_checkout(client, request, key)
    expect((again.payment_id, again.checkout_url) == (payment.payment_id, payment.checkout_url),
           f"same key, other payment: {again.payment_id} vs {payment.payment_id}")
    print(f"same key again: same payment {again.payment_id}, same checkout URL")

    # 4. The payment as it is now (CREATED until the customer pays at Stripe).
    current = client.get_payment(deal_id=deal_id)
    expect(current.payment_id == payment.payment_id, f"GetPayment answered {current}")
    print(f"payment: {current.payment_id} {enum_name(pb.PaymentStatus, current.status)} "
          f"deal={current.deal_id} amount={current.amount_total} {current.currency}")

    # 5. More than is left (5 on hand, 2 reserved by step 2): refused by reason.
    if stock_tracked:
        try:
            open_checkout(client, checkout_request(f"{deal_id}-b", sku, quantity=4),
                          f"checkout-{deal_id}-b")
            raise Unexpected("a checkout for 4 of the 3 left was accepted")
        except SoldOut as e:
            expect(e.sku == sku, f"insufficient_stock names sku {e.sku!r}, expected {sku!r}")
            print(f"sold out: 4 of {e.sku} refused with insufficient_stock")

    # 6. An unknown deal: NOT_FOUND, reason deal_not_found.
    try:
        client.get_payment(deal_id=f"no-such-deal-{run_id}")
        raise Unexpected("GetPayment of an unknown deal answered OK")
    except PaymentsError as e:
        if e.reason != "deal_not_found":
            raise
        print(f"unknown deal: {e.code_name} {e.reason}")

    print("ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="paymentsd client example")
    parser.add_argument("socket", nargs="?",
                        default=os.environ.get("PAYMENTSD_SOCKET") or DEFAULT_SOCKET,
                        help="the daemon's socket [$PAYMENTSD_SOCKET, else %(default)s]")
    args = parser.parse_args(argv)
    try:
        with PaymentsClient(args.socket) as client:
            run(client)
        return 0
    except TransportError as e:
        print(f"example: {e}", file=sys.stderr)
        return 69  # EX_UNAVAILABLE, as paymentsctl
    except PaymentsError as e:
        print(f"example: unexpected error: {e}", file=sys.stderr)
        return 1
    except Unexpected as e:
        print(f"example: unexpected answer: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
