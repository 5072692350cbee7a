"""ConfirmCheckout and CancelCheckout, expiry by event, and ConfirmCheckout racing the webhook.

Guarantees 4 (exactly-once fulfilment, whatever races it), 5 (stock
committed at fulfilment, released at expiry/cancel) and 8 (cancel is safe
against a paying customer) of behaviour.md.

Choices where the contract is silent (a careful payments engineer's):
- an event that arrives after ConfirmCheckout already fulfilled the payment is
  a new event id for a known payment: OK and APPLIED (a no-op), never a second
  order;
- after a cancel, the fake's own `checkout.session.expired` event (caused by
  the daemon's expire call) is accepted and changes nothing: the payment stays
  CANCELED, and the stock is not released a second time;
- the cancel reason is recorded in the audit trail (payments.proto says so).
"""

from __future__ import annotations

import time

import pytest

import checkout_support as cs
import paymentsd_harness as h
import webhook_support as ws
from checkout_support import expect_error

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

SKU = "cc-sku"


def _stock(c, sku=SKU):
    st = cs.get_stock(c, sku)
    return st.on_hand, st.reserved


# ---------------------------------------------------------------------------
# Expiry


def test_expired_event_releases_stock(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, "deal-exp", SKU, 3)
    assert _stock(c) == (10, 3)
    fake_stripe.expire_session_at_stripe(pay.checkout_session_id)
    body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.EXPIRED)
    res = ws.deliver_ok(c, body, sig, "checkout.session.expired")
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED, ws.outcome_name(res.outcome)
    got = cs.get_payment(c, deal_id="deal-exp")
    assert got.status == pb.PAYMENT_STATUS_EXPIRED and not got.order_id, (
        f"after the expired event: {cs.status_name(got.status)}")
    assert _stock(c) == (10, 0), f"expiry must release the 3 reserved units: {_stock(c)}"
    res = ws.deliver_ok(c, body, sig, "expired again")
    assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE
    assert _stock(c) == (10, 0)
    assert any(e.to_status == "EXPIRED" for e in cs.list_events(c, "deal-exp"))
    # Stock released for real: another deal can now take all 10.
    ws.open_checkout(c, "deal-exp-next", SKU, 10)
    assert _stock(c) == (10, 10)


# ---------------------------------------------------------------------------
# ConfirmCheckout


def test_confirm_checkout_open_paid_and_expired(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    a = ws.open_checkout(c, "deal-conf-a", SKU, 2)

    # Open at Stripe: nothing changes.
    status, payload = ws.confirm(c, deal_id="deal-conf-a")
    assert status.code == pb.OK, h.describe_status(status)
    got = pb.Payment.FromString(payload)
    assert got.payment_id == a.payment_id and got.status == pb.PAYMENT_STATUS_CREATED, (
        f"ConfirmCheckout of an open session: {cs.status_name(got.status)}")
    assert _stock(c) == (10, 2)

    # Paid at Stripe: PAID, one order, stock committed; by payment_id too; twice is once.
    fake_stripe.complete_session(a.checkout_session_id, paid=True)
    status, payload = ws.confirm(c, payment_id=a.payment_id)
    assert status.code == pb.OK, h.describe_status(status)
    got = pb.Payment.FromString(payload)
    intent = fake_stripe.session(a.checkout_session_id)["payment_intent"]
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id.startswith("ord_"), (
        f"ConfirmCheckout of a paid session: {cs.status_name(got.status)} order {got.order_id!r}")
    assert got.payment_intent_id == intent
    assert _stock(c) == (8, 0), f"fulfilment must commit 2 units: {_stock(c)}"
    for ref in ({"deal_id": "deal-conf-a"}, {"payment_id": a.payment_id}):
        status, payload = ws.confirm(c, **ref)
        again = pb.Payment.FromString(payload)
        assert status.code == pb.OK and again.status == pb.PAYMENT_STATUS_PAID, (
            f"ConfirmCheckout again ({ref}): {h.describe_status(status)}")
        assert again.order_id == got.order_id, "a second ConfirmCheckout made another order"
    # The webhook arriving afterwards: a no-op.
    body, sig = ws.session_delivery(fake_stripe, a.checkout_session_id, ws.COMPLETED)
    res = ws.deliver_ok(c, body, sig, "the completed event after ConfirmCheckout")
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED, ws.outcome_name(res.outcome)
    assert _stock(c) == (8, 0), f"the webhook after ConfirmCheckout changed stock: {_stock(c)}"
    assert len(ws.paid_transitions(c, "deal-conf-a")) == 1
    assert cs.get_payment(c, deal_id="deal-conf-a").order_id == got.order_id

    # Expired at Stripe (no webhook): EXPIRED, stock released.
    b = ws.open_checkout(c, "deal-conf-b", SKU, 3)
    assert _stock(c) == (8, 3)
    fake_stripe.expire_session_at_stripe(b.checkout_session_id)
    status, payload = ws.confirm(c, deal_id="deal-conf-b")
    assert status.code == pb.OK, h.describe_status(status)
    got_b = pb.Payment.FromString(payload)
    assert got_b.status == pb.PAYMENT_STATUS_EXPIRED and not got_b.order_id, (
        f"ConfirmCheckout of an expired session: {cs.status_name(got_b.status)}")
    assert _stock(c) == (8, 0), f"expiry via ConfirmCheckout must release 3 units: {_stock(c)}"

    # Unknown deal / payment.
    status, _ = ws.confirm(c, deal_id="deal-conf-nobody")
    expect_error(status, "NOT_FOUND", "deal_not_found", "ConfirmCheckout of an unknown deal")
    status, _ = ws.confirm(c, payment_id="pay_nobody")
    expect_error(status, "NOT_FOUND", "payment_not_found", "ConfirmCheckout of an unknown payment")


# ---------------------------------------------------------------------------
# 2. ConfirmCheckout racing the webhook

ROUNDS = 20


@pytest.mark.test_timeout(120)
def test_confirm_races_webhook_exactly_one_order(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 1000)
    outcomes = []
    for rnd in range(ROUNDS):
        deal = f"deal-race-{rnd}"
        pay = ws.open_checkout(c, deal, SKU, 2)
        fake_stripe.complete_session(pay.checkout_session_id, paid=True)
        body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)

        # Two ConfirmCheckout calls and two deliveries of the event (Stripe retries), at once.
        def one(i):
            with h.Client(d.socket_path, timeout=30) as cc:
                if i % 2 == 0:
                    return ws.confirm(cc, deal_id=deal, timeout=30)
                return ws.deliver(cc, body, sig, timeout=30)

        results = cs.run_concurrently(4, one, timeout=40)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"round {rnd}: {errors[0]!r}"
        order_ids = set()
        for cstatus, cpayload in results[0::2]:
            assert cstatus.code == pb.OK, (
                f"round {rnd}: ConfirmCheckout {h.describe_status(cstatus)}")
            confirmed = pb.Payment.FromString(cpayload)
            assert confirmed.status == pb.PAYMENT_STATUS_PAID and confirmed.order_id, (
                f"round {rnd}: ConfirmCheckout answered {cs.status_name(confirmed.status)} "
                f"order {confirmed.order_id!r} for a paid session")
            order_ids.add(confirmed.order_id)
        assert len(order_ids) == 1, f"round {rnd}: ConfirmCheckout answered orders {order_ids}"
        for estatus, _ in results[1::2]:
            assert estatus.code == pb.OK, f"round {rnd}: webhook {h.describe_status(estatus)}"
        got = sorted(ws.outcome_name(r.outcome) for _, r in results[1::2])
        assert got == ["EVENT_OUTCOME_APPLIED", "EVENT_OUTCOME_DUPLICATE"], (
            f"round {rnd}: two deliveries of one event answered {got}")
        outcomes.append(got)

        payments = cs.list_payments(c, deal)
        assert len(payments) == 1 and payments[0].status == pb.PAYMENT_STATUS_PAID, (
            f"round {rnd}: {ws.summary(payments)}")
        assert payments[0].order_id == confirmed.order_id, (
            f"round {rnd}: ConfirmCheckout said order {confirmed.order_id}, the payment has "
            f"{payments[0].order_id}")
        paid = ws.paid_transitions(c, deal)
        assert len(paid) == 1, (
            f"round {rnd}: the payment moved to PAID {len(paid)} times: "
            f"{[(e.kind, e.detail) for e in paid]}")
        want = (1000 - 2 * (rnd + 1), 0)
        assert _stock(c) == want, (
            f"round {rnd}: stock {_stock(c)}, expected {want} (committed exactly once per round)")
    orders = [cs.get_payment(c, deal_id=f"deal-race-{r}").order_id for r in range(ROUNDS)]
    assert len(set(orders)) == ROUNDS, f"order ids not distinct: {orders}"


# ---------------------------------------------------------------------------
# CancelCheckout


def test_cancel_open_checkout_expires_at_stripe_and_releases(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, "deal-cancel", SKU, 4)
    assert _stock(c) == (10, 4)
    status, payload = ws.cancel(c, "deal-cancel", reason="customer changed their mind")
    assert status.code == pb.OK, f"CancelCheckout: {h.describe_status(status)}"
    got = pb.Payment.FromString(payload)
    assert got.payment_id == pay.payment_id and got.status == pb.PAYMENT_STATUS_CANCELED, (
        f"CancelCheckout answered {cs.status_name(got.status)}")
    assert fake_stripe.session(pay.checkout_session_id)["status"] == "expired", (
        "the canceled checkout's session is still open at Stripe")
    expires = fake_stripe.requests(cs.EXPIRE_ROUTE)
    assert len(expires) == 1 and expires[0]["idempotency_key"], (
        f"expected one expire POST with an Idempotency-Key: {expires}")
    assert _stock(c) == (10, 0), f"cancel must release the 4 reserved units: {_stock(c)}"
    assert cs.get_payment(c, deal_id="deal-cancel").status == pb.PAYMENT_STATUS_CANCELED
    events = cs.list_events(c, "deal-cancel")
    canceled = [e for e in events if e.to_status == "CANCELED"]
    assert len(canceled) == 1, [(e.kind, e.to_status) for e in events]
    assert any("customer changed their mind" in e.detail for e in events), (
        f"the cancel reason is not in the audit trail: {[(e.kind, e.detail) for e in events]}")

    # Again: not open any more.
    status, _ = ws.cancel(c, "deal-cancel")
    expect_error(status, "FAILED_PRECONDITION", "checkout_not_open", "second cancel")
    status, _ = ws.cancel(c, "deal-cancel-nobody")
    expect_error(status, "NOT_FOUND", "deal_not_found", "cancel of an unknown deal")
    assert len(fake_stripe.requests(cs.EXPIRE_ROUTE)) == 1

    # The fake's expired event (caused by the cancel) arrives later: nothing changes.
    body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.EXPIRED)
    ws.deliver_ok(c, body, sig, "expired event after cancel")
    got = cs.get_payment(c, deal_id="deal-cancel")
    assert got.status == pb.PAYMENT_STATUS_CANCELED, (
        f"the expired event moved a CANCELED payment to {cs.status_name(got.status)}")
    assert _stock(c) == (10, 0), f"released twice? {_stock(c)}"
    # The released units are really available.
    ws.open_checkout(c, "deal-cancel-next", SKU, 10)
    assert _stock(c) == (10, 10)
    assert cs.wait_no_pending(d, 10) == 0


def test_cancel_after_customer_paid_answers_already_paid(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, "deal-cancel-paid", SKU, 2)
    fake_stripe.complete_session(pay.checkout_session_id, paid=True)
    status, _ = ws.cancel(c, "deal-cancel-paid", reason="too slow")
    expect_error(status, "FAILED_PRECONDITION", "already_paid", "cancel of a paid checkout")
    got = cs.get_payment(c, deal_id="deal-cancel-paid")
    session = fake_stripe.session(pay.checkout_session_id)
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id.startswith("ord_"), (
        f"after already_paid the payment is {cs.status_name(got.status)} order {got.order_id!r}")
    assert got.payment_intent_id == session["payment_intent"]
    assert session["status"] == "complete"
    assert _stock(c) == (8, 0), f"the paid checkout's stock must be committed: {_stock(c)}"
    assert len(cs.list_payments(c, "deal-cancel-paid")) == 1
    # The webhook, late: no second order.
    body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)
    ws.deliver_ok(c, body, sig, "completed after already_paid")
    again = cs.get_payment(c, deal_id="deal-cancel-paid")
    assert (again.status, again.order_id) == (pb.PAYMENT_STATUS_PAID, got.order_id)
    assert _stock(c) == (8, 0)
    assert len(ws.paid_transitions(c, "deal-cancel-paid")) == 1
    # A paid deal is not open: cancel again says so (already_paid or checkout_not_open).
    status, _ = ws.cancel(c, "deal-cancel-paid")
    assert status.code == pb.FAILED_PRECONDITION and status.reason in (
        "already_paid", "checkout_not_open"), h.describe_status(status)
    assert cs.wait_no_pending(d, 10) == 0


def test_cancel_honours_idempotency_keys(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, "deal-cancel-key", SKU, 1)
    s1, p1 = ws.cancel(c, "deal-cancel-key", reason="r", idempotency_key="cancel-key-1")
    assert s1.code == pb.OK, h.describe_status(s1)
    assert pb.Payment.FromString(p1).status == pb.PAYMENT_STATUS_CANCELED
    for i in range(2):
        s2, p2 = ws.cancel(c, "deal-cancel-key", reason="r", idempotency_key="cancel-key-1")
        assert s2.code == pb.OK, (
            f"replay {i} of a cancel with the same key must return the stored answer, got "
            f"{h.describe_status(s2)}")
        assert p2 == p1, f"replay {i}: payload differs from the first answer"
    assert len(fake_stripe.requests(cs.EXPIRE_ROUTE)) == 1, "the replay reached Stripe"
    assert _stock(c) == (10, 0)
    other = ws.open_checkout(c, "deal-cancel-key-2", SKU, 1)
    s3, _ = ws.cancel(c, "deal-cancel-key-2", reason="r", idempotency_key="cancel-key-1")
    expect_error(s3, "INVALID_ARGUMENT", "idempotency_key_reused", "same key, another deal")
    assert cs.get_payment(c, deal_id="deal-cancel-key-2").status == pb.PAYMENT_STATUS_CREATED
    assert fake_stripe.session(other.checkout_session_id)["status"] == "open"
    assert pay.payment_id


def test_cancel_when_stripe_already_expired_the_session(pay_daemon, fake_stripe, pb):
    """Stripe expired the session on its own and the webhook has not arrived: Stripe refuses
    the expire call (400, status expired). The cancel must still end the checkout here and
    release its stock, never leave a CREATED payment holding stock for a dead session."""
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, "deal-cancel-gone", SKU, 2)
    fake_stripe.expire_session_at_stripe(pay.checkout_session_id)
    status, payload = ws.cancel(c, "deal-cancel-gone")
    got = cs.get_payment(c, deal_id="deal-cancel-gone")
    if status.code == pb.OK:
        assert pb.Payment.FromString(payload).status in (pb.PAYMENT_STATUS_CANCELED,
                                                         pb.PAYMENT_STATUS_EXPIRED)
    else:
        expect_error(status, "FAILED_PRECONDITION", "checkout_not_open",
                     "cancel of a session Stripe already expired")
    assert got.status in (pb.PAYMENT_STATUS_CANCELED, pb.PAYMENT_STATUS_EXPIRED), (
        f"after cancel ({h.describe_status(status)}) the payment is {cs.status_name(got.status)}")
    assert _stock(c) == (10, 0), f"stock not released: {_stock(c)}"
    assert cs.wait_no_pending(d, 10) == 0


def test_cancel_while_an_async_payment_is_processing_keeps_the_checkout(pay_daemon, fake_stripe,
                                                                          pb):
    """The customer completed the page with a delayed method (session complete, unpaid):
    Stripe cannot expire it and the money may still come. The cancel must fail and keep
    the reservation (the contract only cancels an open checkout); when the payment then
    succeeds, the order is made with that stock."""
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, "deal-cancel-async", SKU, 3)
    fake_stripe.complete_session(pay.checkout_session_id, paid=False)
    status, _ = ws.cancel(c, "deal-cancel-async")
    assert status.code != pb.OK, "a checkout whose payment is processing was canceled"
    got = cs.get_payment(c, deal_id="deal-cancel-async")
    assert got.status == pb.PAYMENT_STATUS_CREATED, (
        f"after the refused cancel ({h.describe_status(status)}) the payment is "
        f"{cs.status_name(got.status)}")
    assert _stock(c) == (10, 3), f"the refused cancel touched stock: {_stock(c)}"
    fake_stripe.control("POST", f"/_fake/sessions/{pay.checkout_session_id}/async_result",
                        {"succeeded": True})
    ws.deliver_ok(c, *ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.ASYNC_OK))
    got = cs.get_payment(c, deal_id="deal-cancel-async")
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id, cs.status_name(got.status)
    assert _stock(c) == (7, 0), f"stock after the async success: {_stock(c)}"


@pytest.mark.test_timeout(90)
def test_cancel_races_the_completed_webhook(pay_daemon, fake_stripe, pb):
    """The customer paid; CancelCheckout and the completed event arrive at once: whichever
    wins, one order, stock committed once, and the cancel says already_paid."""
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 100)
    for rnd in range(8):
        deal = f"deal-cancel-race-{rnd}"
        pay = ws.open_checkout(c, deal, SKU, 1)
        fake_stripe.complete_session(pay.checkout_session_id, paid=True)
        body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)

        def one(i):
            with h.Client(d.socket_path, timeout=30) as cc:
                return (ws.cancel(cc, deal, timeout=30) if i == 0
                        else ws.deliver(cc, body, sig, timeout=30))

        (cstatus, _), (estatus, eres) = cs.run_concurrently(2, one, timeout=40)
        expect_error(cstatus, "FAILED_PRECONDITION", "already_paid", f"round {rnd}: cancel")
        assert estatus.code == pb.OK and eres.outcome == pb.EVENT_OUTCOME_APPLIED, (
            f"round {rnd}: {h.describe_status(estatus)}")
        payments = cs.list_payments(c, deal)
        assert [(p.status, bool(p.order_id)) for p in payments] == [
            (pb.PAYMENT_STATUS_PAID, True)], f"round {rnd}: {ws.summary(payments)}"
        assert len(ws.paid_transitions(c, deal)) == 1
        assert _stock(c) == (100 - (rnd + 1), 0), f"round {rnd}: {_stock(c)}"
        assert fake_stripe.session(pay.checkout_session_id)["status"] == "complete"


@pytest.mark.test_timeout(60)
def test_customer_pays_during_a_slow_cancel_and_the_event_waits_for_the_lock(pay_daemon,
                                                                              fake_stripe, pb):
    """CancelCheckout holds the deal's lock while Stripe is slow to answer its expire call;
    meanwhile the customer pays and the completed event arrives with a short deadline. The
    event is stored and answered OK (QUEUED: stored, applied later), not refused for the lock;
    the expire then fails at Stripe (session complete), the cancel fulfils and answers
    already_paid; one order, stock committed once; Stripe's redelivery is a DUPLICATE."""
    d = pay_daemon(env={"PAYMENTSD_JANITOR_INTERVAL": "1"})
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, "deal-slow-cancel", SKU, 2)
    fake_stripe.add_fault(route=cs.EXPIRE_ROUTE, kind="delay", ms=2500)
    delivered = {}

    def one(i):
        with h.Client(d.socket_path, timeout=30) as cc:
            if i == 0:
                return ws.cancel(cc, "deal-slow-cancel", timeout=30)
            time.sleep(0.4)  # the cancel holds the lock, its expire call is at Stripe
            fake_stripe.complete_session(pay.checkout_session_id, paid=True)
            body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)
            delivered["event"] = (body, sig)
            t0 = time.monotonic()
            status, res = ws.deliver(cc, body, sig, timeout_ms=800, timeout=30)
            return status, res, time.monotonic() - t0

    (cstatus, _), (estatus, eres, took) = cs.run_concurrently(2, one, timeout=40)
    assert estatus.code == pb.OK, (
        f"a webhook arriving while the deal is locked must be stored and answered OK, got "
        f"{h.describe_status(estatus)} after {took:.2f} s")
    assert eres.outcome == pb.EVENT_OUTCOME_QUEUED, (
        f"an event only stored must not be called applied: {ws.outcome_name(eres.outcome)}")
    expect_error(cstatus, "FAILED_PRECONDITION", "already_paid",
                 "cancel of a checkout paid meanwhile")
    got = ws.wait_payment_status(d, "deal-slow-cancel", pb.PAYMENT_STATUS_PAID, timeout=10)
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id, cs.status_name(got.status)
    assert cs.wait_no_pending(d, 10) == 0
    time.sleep(1.5)  # a janitor sweep applies the stored event (a no-op now)
    assert len(ws.paid_transitions(c, "deal-slow-cancel")) == 1
    assert _stock(c) == (8, 0), f"stock committed once: {_stock(c)}"
    res = ws.deliver_ok(c, *delivered["event"], "redelivery")
    assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE, ws.outcome_name(res.outcome)
    assert fake_stripe.session(pay.checkout_session_id)["status"] == "complete"
