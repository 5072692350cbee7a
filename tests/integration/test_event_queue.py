"""Events stored but not applied yet are QUEUED, and applied later (guarantee 10, protocol.md
section 4: `QUEUED`: stored durably, to be applied later by the janitor).

HandleStripeEvent stores a verified event before it answers. When it cannot apply the event
now, the honest answer is QUEUED, never APPLIED (the caller, or the HTTP endpoint's log,
would believe the effect is there) nor IGNORED (which says it never will be). Two reasons:

- its deal's lock cannot be had before the call's deadline (another call holds it, waiting
  for Stripe): the event is applied by the next sweep (Reconcile);
- it names a payment intent no payment has recorded yet (a refund made in Stripe's dashboard
  whose `refund.created` / `charge.refunded` overtakes the `checkout.session.completed` that
  records the intent): it stays pending until the intent is known, then is applied, so the
  refund is not lost.

Either way a redelivery is a DUPLICATE and the effect happens once. The janitor is slowed
down (PAYMENTSD_JANITOR_INTERVAL=3600) so that Reconcile is what applies the stored events.
"""

from __future__ import annotations

import threading
import time

import pytest

import checkout_support as cs
import paymentsd_harness as h
import refund_support as rs
import webhook_support as ws

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

SKU = "eq-sku"
QUIET = {"PAYMENTSD_JANITOR_INTERVAL": "3600"}
STRIPE_DELAY_MS = 3000
EVENT_TIMEOUT_MS = 400


def _outcome(res) -> str:
    return ws.outcome_name(res.outcome).removeprefix("EVENT_OUTCOME_")


def _one_event(fake, stripe_refund_id: str, type_: str) -> dict:
    evs = rs.refund_events(fake, stripe_refund_id, (type_,))
    assert len(evs) == 1, (f"test setup: expected one {type_} for {stripe_refund_id} at the fake, "
                           f"found {len(evs)}")
    return evs[0]


def _wait_pending_row(daemon: h.Daemon, payment_id: str, timeout: float = 10.0):
    """Polls GetPayment (a plain read, no deal lock) until the payment has a PENDING refund
    row: RefundPayment then holds the deal's lock and is at (or on its way to) Stripe."""
    deadline = time.monotonic() + timeout
    while True:
        with h.Client(daemon.socket_path) as c:
            pay = rs.payment(c, payment_id)
        if any(r.status == h.pb().REFUND_STATUS_PENDING for r in pay.refunds):
            return pay
        assert time.monotonic() < deadline, (
            f"test setup: RefundPayment made no PENDING row within {timeout} s: "
            f"{rs.describe_payment(pay)}")
        time.sleep(0.05)


@pytest.mark.test_timeout(90)
def test_event_that_cannot_have_its_deals_lock_is_queued_then_applied_by_reconcile(
        pay_daemon, fake_stripe, pb):
    """RefundPayment holds the deal's lock while Stripe is slow to answer its POST /v1/refunds;
    meanwhile the `refund.created` of a refund made in Stripe's dashboard arrives with a short
    deadline. It is stored and answered OK QUEUED (not APPLIED: nothing is applied yet). Once
    the refund call is done, Reconcile applies it: both refunds are recorded, once each, and
    the daemon agrees with Stripe; redeliveries are DUPLICATE."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = "deal-eq-locked"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 1, 1000, set_stock=10)
    outside = rs.dashboard_refund(fake_stripe, pay.payment_intent_id, 300)
    created_ev = _one_event(fake_stripe, outside["id"], "refund.created")
    # Its charge.refunded, now (a later one, of the daemon's refund, lists both refunds).
    charge_ev = _one_event(fake_stripe, outside["id"], "charge.refunded")
    body, sig = ws.delivery(fake_stripe, created_ev["id"])

    fake_stripe.add_fault(route=rs.REFUNDS_ROUTE, kind="delay", ms=STRIPE_DELAY_MS)
    result: dict = {}

    def slow_refund():
        try:
            with h.Client(d.socket_path, timeout=rs.CALL_TIMEOUT) as cc:
                result["answer"] = rs.refund(cc, "eq-slow-1", payment_id=pay.payment_id, amount=200)
        except BaseException as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=slow_refund, daemon=True)
    t.start()
    _wait_pending_row(d, pay.payment_id)
    t0 = time.monotonic()
    status, res = ws.deliver(c, body, sig, timeout_ms=EVENT_TIMEOUT_MS, timeout=30)
    took = time.monotonic() - t0
    locked = t.is_alive()
    t.join(rs.CALL_TIMEOUT)
    assert not t.is_alive(), "the slow RefundPayment did not finish"
    assert "error" not in result, f"the slow RefundPayment raised {result.get('error')!r}"
    assert locked, (
        f"test setup: the slow RefundPayment ended before the event was answered ({took:.2f} s): "
        f"the deal's lock was not held during the delivery")

    assert status.code == pb.OK, (
        f"an event whose deal is locked must be stored and answered OK, got "
        f"{h.describe_status(status)} after {took:.2f} s")
    assert res.event_id == created_ev["id"] and res.type == "refund.created", res
    assert res.outcome == pb.EVENT_OUTCOME_QUEUED, (
        f"the event was only stored (its deal's lock could not be had in {EVENT_TIMEOUT_MS} ms), "
        f"so its outcome is QUEUED, got {_outcome(res)} after {took:.2f} s")

    r_status, mine, _ = result["answer"]
    assert r_status.code == pb.OK, f"the slow RefundPayment: {h.describe_status(r_status)}"
    assert (mine.amount, mine.status) == (200, pb.REFUND_STATUS_SUCCEEDED), rs.describe_refund(mine)

    report = rs.reconcile(c)
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id,
                                                f"after Reconcile ({report})")
    recorded = sorted((r.amount, r.status, r.stripe_refund_id) for r in got.refunds)
    assert recorded == sorted([(200, pb.REFUND_STATUS_SUCCEEDED, mine.stripe_refund_id),
                               (300, pb.REFUND_STATUS_SUCCEEDED, outside["id"])]), (
        f"after Reconcile the queued dashboard refund must be recorded next to the daemon's: "
        f"{rs.describe_payment(got)}")
    assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 500), (
        rs.describe_payment(got))

    again = ws.deliver_ok(c, body, sig, "the queued event, redelivered")
    assert again.outcome == pb.EVENT_OUTCOME_DUPLICATE, _outcome(again)
    # The other event of the dashboard refund names the refund already recorded; Reconcile's
    # Events API catch-up fetched it already, so its webhook is a duplicate too.
    other = ws.deliver_ok(c, *ws.delivery(fake_stripe, charge_ev["id"]), "charge.refunded")
    assert other.outcome == pb.EVENT_OUTCOME_DUPLICATE, _outcome(other)
    rs.reconcile(c)
    final, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "after charge.refunded")
    assert len(final.refunds) == 2 and final.amount_refunded == 500, rs.describe_payment(final)
    kinds = rs.kinds(c, deal)
    assert kinds.count("refund.recorded_from_stripe") == 1, f"audit: {kinds}"
    assert cs.wait_no_pending(d, 10) == 0


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("amount", [400, 1000], ids=["partial", "full"])
def test_refund_event_before_its_payment_intent_is_recorded_stays_queued(
        pay_daemon, fake_stripe, pb, amount):
    """The customer pays; before the `checkout.session.completed` that records payment intent
    pi_X reaches the daemon, the merchant refunds in Stripe's dashboard and its
    `refund.created` and `charge.refunded` (no paymentsd metadata, naming only pi_X) arrive.
    No payment has pi_X yet: each is QUEUED, not IGNORED (that loses the refund for good).
    The completion then arrives (PAID with pi_X), and Reconcile records the refund once: the
    payment's amount_refunded and status follow, and the daemon agrees with Stripe."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = f"deal-eq-early-{amount}"
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, deal, SKU, 1, 1000)
    session = fake_stripe.complete_session(pay.checkout_session_id, paid=True)
    intent = session["payment_intent"]
    assert intent and intent.startswith("pi_"), f"test setup: session {session}"
    outside = rs.dashboard_refund(fake_stripe, intent, amount)
    assert outside["metadata"] == {} and outside["payment_intent"] == intent, outside

    early = [_one_event(fake_stripe, outside["id"], t) for t in ("refund.created", "charge.refunded")]
    before = cs.get_payment(c, deal_id=deal)
    assert (before.status, before.payment_intent_id) == (pb.PAYMENT_STATUS_CREATED, ""), (
        f"test setup: {rs.describe_payment(before)} intent {before.payment_intent_id!r}")
    deliveries = {}
    for e in early:
        deliveries[e["id"]] = ws.delivery(fake_stripe, e["id"])
        res = ws.deliver_ok(c, *deliveries[e["id"]], f"{e['type']} before completed")
        assert res.outcome == pb.EVENT_OUTCOME_QUEUED, (
            f"{e['type']} names payment intent {intent}, which no payment has recorded yet (its "
            f"checkout.session.completed has not arrived): it must stay pending (QUEUED), got "
            f"{_outcome(res)}")
    mid = cs.get_payment(c, deal_id=deal)
    assert mid.status == pb.PAYMENT_STATUS_CREATED and not mid.refunds, (
        f"a queued refund event changed the open checkout: {rs.describe_payment(mid)}")

    done = ws.deliver_ok(c, *ws.session_delivery(fake_stripe, pay.checkout_session_id,
                                                 ws.COMPLETED), "completed")
    assert done.outcome == pb.EVENT_OUTCOME_APPLIED, _outcome(done)
    paid = cs.get_payment(c, deal_id=deal)
    assert paid.payment_intent_id == intent and paid.order_id, rs.describe_payment(paid)

    report = rs.reconcile(c)
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, paid.payment_id,
                                                f"after completed and Reconcile ({report})")
    assert [(r.amount, r.status, r.stripe_refund_id) for r in got.refunds] == [
        (amount, pb.REFUND_STATUS_SUCCEEDED, outside["id"])], (
        f"the dashboard refund that arrived before the completion must be recorded once: "
        f"{rs.describe_payment(got)}")
    want = pb.PAYMENT_STATUS_REFUNDED if amount == 1000 else pb.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert (got.status, got.amount_refunded, got.order_id) == (want, amount, paid.order_id), (
        rs.describe_payment(got))
    for e in early:
        res = ws.deliver_ok(c, *deliveries[e["id"]], f"{e['type']} again")
        assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE, f"{e['type']} again: {_outcome(res)}"
    rs.reconcile(c)
    final = cs.get_payment(c, deal_id=deal)
    assert (len(final.refunds), final.amount_refunded) == (1, amount), rs.describe_payment(final)
    kinds = rs.kinds(c, deal)
    assert kinds.count("refund.recorded_from_stripe") == 1, f"audit: {kinds}"
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (9, 0), f"a refund without restock changed stock: {st}"
