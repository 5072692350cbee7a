"""Late payments (guarantee 5): a customer's payment that lands at Stripe after
paymentsd closed the checkout. Its stock is held again when it is still there
and the payment fulfilled; otherwise nothing is sold twice: the payment is
refunded in full at Stripe, no order is made, and the payment says why."""
from __future__ import annotations

import pytest

import checkout_support as cs
import paymentsd_harness as h
import webhook_support as ws

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

SKU = "late-sku"


def _expire(c, fake, pay, pb):
    """Stripe expires the session and says so; paymentsd releases the stock."""
    fake.expire_session_at_stripe(pay.checkout_session_id)
    body, sig = ws.session_delivery(fake, pay.checkout_session_id, ws.EXPIRED)
    ws.deliver_ok(c, body, sig, "checkout.session.expired")
    assert cs.get_payment(c, payment_id=pay.payment_id).status == pb.PAYMENT_STATUS_EXPIRED


def _pay_late(c, fake, pay):
    """The customer's payment goes through just as the session expired (the fake's late flag)."""
    fake.control("POST", f"/_fake/sessions/{pay.checkout_session_id}/complete", {"paid": True, "late": True})
    body, sig = ws.session_delivery(fake, pay.checkout_session_id, ws.COMPLETED)
    return ws.deliver_ok(c, body, sig, "late checkout.session.completed")


def _stock(c):
    s = cs.get_stock(c, SKU)
    return (s.on_hand, s.reserved)


def test_late_payment_after_the_stock_was_sold_is_refunded_without_an_order(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 1)
    first = ws.open_checkout(c, "deal-late-a", SKU, 1)
    _expire(c, fake_stripe, first, pb)
    second = ws.open_checkout(c, "deal-late-b", SKU, 1)  # the last unit goes elsewhere
    assert _stock(c) == (1, 1)

    res = _pay_late(c, fake_stripe, first)
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED, ws.outcome_name(res.outcome)

    got = cs.get_payment(c, payment_id=first.payment_id)
    ctx = f"late payment: {cs.status_name(got.status)} order={got.order_id!r} reason={got.failure_reason!r}"
    assert got.status == pb.PAYMENT_STATUS_EXPIRED and not got.order_id, ctx
    assert got.failure_reason.startswith("late_payment_refunded") and SKU in got.failure_reason, ctx
    assert got.amount_refunded == got.amount_total, ctx
    # One full refund at Stripe, for this payment, sent with a key derived from the payment.
    intent = fake_stripe.session(first.checkout_session_id)["payment_intent"]
    refunds = [r for r in fake_stripe.requests("POST /v1/refunds")]
    assert len({r["idempotency_key"] for r in refunds}) == 1 and refunds, refunds
    assert refunds[0]["params"]["payment_intent"] == intent
    assert refunds[0]["params"]["metadata"]["payment_id"] == first.payment_id
    # Nothing sold twice: the other deal still holds the only unit.
    assert _stock(c) == (1, 1)
    assert cs.get_payment(c, payment_id=second.payment_id).status == pb.PAYMENT_STATUS_CREATED
    kinds = [e.kind for e in cs.list_events(c, "deal-late-a")]
    assert "payment.late" in kinds and "payment.late_refunded" in kinds, kinds

    # The same event again changes nothing and refunds nothing more.
    body, sig = ws.session_delivery(fake_stripe, first.checkout_session_id, ws.COMPLETED)
    assert ws.deliver_ok(c, body, sig, "again").outcome == pb.EVENT_OUTCOME_DUPLICATE
    assert len(fake_stripe.requests("POST /v1/refunds")) == len(refunds)


def test_late_payment_with_the_stock_still_there_is_fulfilled(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 3)
    pay = ws.open_checkout(c, "deal-late-ok", SKU, 2)
    _expire(c, fake_stripe, pay, pb)
    assert _stock(c) == (3, 0)

    _pay_late(c, fake_stripe, pay)
    got = cs.get_payment(c, payment_id=pay.payment_id)
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id, (
        f"{cs.status_name(got.status)} order={got.order_id!r} reason={got.failure_reason!r}")
    assert _stock(c) == (1, 0), f"the two units must be sold exactly once: {_stock(c)}"
    assert fake_stripe.requests("POST /v1/refunds") == []
