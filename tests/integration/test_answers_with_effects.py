"""The stored idempotent answer commits with the effect (protocol.md section 5, guarantee 3).

A mutating call under an idempotency key K has two things to make durable: its effect (a
session recorded, a checkout closed, a refund settled, stock changed) and the answer K
replays. If they commit separately, a crash between the two leaves the effect without its
answer, and the caller's retry with K is then answered by running the call again on the
changed state: `created=false` for the checkout the first call opened, `checkout_not_open`
for the checkout the first call canceled, a refund as it is now rather than as the call
made it, a stock level that moved since. The retry must get the answer the first call
would have given, and nothing is done twice.

Each test: set up without a crash point, run the call under
PAYMENTSD_CRASH_AT=<a point right after the effect's transaction> (the process ends with
status 137 there), start the daemon again on the same database and socket without the
variable, retry with the same key (sometimes after the state has moved on, so that "the
same answer" and "the answer computed again" differ), and check the answer and that the
effect happened once.

Crash points used: `create_checkout.session_recorded`, `cancel_checkout.checkout_closed`,
`refund_payment.result_recorded`, `adjust_stock.committed`, `set_stock.committed`.
"""

from __future__ import annotations

import pytest

import checkout_support as cs
import paymentsd_harness as h
import refund_support as rs
import webhook_support as ws
from checkout_support import checkout_request, item

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

SKU = "ans-sku"
# Only the calls under test reach the fake (the start-up sweep still runs).
QUIET = {"PAYMENTSD_JANITOR_INTERVAL": "3600"}


def _daemon(make_daemon, fake_stripe):
    return make_daemon(env={"STRIPE_API_BASE": fake_stripe.url, **QUIET})


def _stock(c, sku=SKU):
    st = cs.get_stock(c, sku)
    return st.on_hand, st.reserved


def _describe_stock(payload: bytes) -> str:
    s = h.pb().Stock.FromString(payload)
    return f"Stock(sku={s.sku} on_hand={s.on_hand} reserved={s.reserved} available={s.available})"


# ---------------------------------------------------------------------------
# CreateCheckout


@pytest.mark.test_timeout(90)
def test_create_checkout_retry_after_crash_at_session_recorded_says_created(
        make_daemon, fake_stripe, pb):
    """The checkout opened by the crashed call is that call's: its key replays `created=true`
    with the same payment and session, never `created=false` (which says another call opened
    it), and no second session is made."""
    d = _daemon(make_daemon, fake_stripe)
    deal, key = "deal-ans-create", "ans-create-1"
    d.start()
    with d.client(timeout=30) as c:
        cs.set_stock(c, SKU, 10)
    assert d.stop() == 0

    req = checkout_request(deal, [item(SKU, 2, 1250)])
    answer = cs.crash_run(d, "create_checkout.session_recorded",
                          lambda c: c.call("CreateCheckout", req, idempotency_key=key,
                                           timeout=30)[0])
    d.start()
    sessions = fake_stripe.sessions_for_deal(deal)
    ctx = (f"crash at create_checkout.session_recorded (the call answered: {answer}); fake "
           f"sessions of the deal {[(s['id'][-8:], s['status']) for s in sessions]}")
    assert len(sessions) == 1 and sessions[0]["status"] == "open", (
        f"test setup: expected the crashed call's one open session: {ctx}")
    session = sessions[0]
    with d.client(timeout=30) as c:
        recorded = cs.get_payment(c, deal_id=deal)
        assert (recorded.status, recorded.checkout_session_id) == (
            pb.PAYMENT_STATUS_CREATED, session["id"]), (
            f"test setup: the session was not recorded before the crash point: "
            f"{cs.status_name(recorded.status)} {recorded.checkout_session_id!r}; {ctx}")

        s1, p1 = c.call("CreateCheckout", req, idempotency_key=key, timeout=30)
        assert s1.code == pb.OK, f"retry with the same key: {h.describe_status(s1)}; {ctx}"
        got = pb.Payment.FromString(p1)
        assert got.created is True, (
            f"the retry with key {key!r} answered created=false: the checkout was opened by "
            f"the call that used this key, so its stored answer says created=true; {ctx}")
        assert (got.payment_id, got.checkout_session_id, got.checkout_url) == (
            recorded.payment_id, session["id"], session["url"]), (
            f"the retry answered payment {got.payment_id} session {got.checkout_session_id} "
            f"url {got.checkout_url!r}, expected {recorded.payment_id} {session['id']} "
            f"{session['url']!r}; {ctx}")
        assert got.status == pb.PAYMENT_STATUS_CREATED, cs.status_name(got.status)

        s2, p2 = c.call("CreateCheckout", req, idempotency_key=key, timeout=30)
        assert s2.code == pb.OK and p2 == p1, (
            f"a second retry answered differently ({h.describe_status(s2)}); {ctx}")
        # Without the key, the deal rule: the same open payment, not opened by this call.
        again = cs.create_ok(c, req, "CreateCheckout of the deal without a key")
        assert (again.payment_id, again.created) == (recorded.payment_id, False), (
            f"without a key: {again.payment_id} created={again.created}; {ctx}")
        assert len(cs.list_payments(c, deal)) == 1
        assert _stock(c) == (10, 2), f"stock reserved once: {_stock(c)}; {ctx}"
    assert len(fake_stripe.sessions_for_deal(deal)) == 1, f"a retry made another session: {ctx}"
    assert fake_stripe.counters()["sessions_created"] == 1


# ---------------------------------------------------------------------------
# CancelCheckout


@pytest.mark.test_timeout(90)
def test_cancel_checkout_retry_after_crash_at_checkout_closed_answers_canceled(
        make_daemon, fake_stripe, pb):
    """The checkout the crashed cancel closed is answered CANCELED to the cancel's key, not
    `checkout_not_open` (the answer of a call that found it already closed); the session is
    expired once and the stock released once."""
    d = _daemon(make_daemon, fake_stripe)
    deal, other_deal, key = "deal-ans-cancel", "deal-ans-cancel-other", "ans-cancel-1"
    d.start()
    with d.client(timeout=30) as c:
        cs.set_stock(c, SKU, 10)
        pay = ws.open_checkout(c, deal, SKU, 4)
        # A bystander's reservation: a second release of the 4 would show in `reserved`.
        ws.open_checkout(c, other_deal, SKU, 3)
        assert _stock(c) == (10, 7), f"test setup: {_stock(c)}"
    assert d.stop() == 0

    creq = pb.CancelRequest(deal_id=deal, reason="customer left")
    answer = cs.crash_run(d, "cancel_checkout.checkout_closed",
                          lambda c: c.call("CancelCheckout", creq, idempotency_key=key,
                                           timeout=30)[0])
    d.start()
    ctx = f"crash at cancel_checkout.checkout_closed (the call answered: {answer})"
    with d.client(timeout=30) as c:
        closed = cs.get_payment(c, deal_id=deal)
        assert closed.status == pb.PAYMENT_STATUS_CANCELED, (
            f"test setup: the cancel's transaction did not commit before the crash point: "
            f"{cs.status_name(closed.status)}; {ctx}")
        assert _stock(c) == (10, 3), f"test setup: stock after the cancel {_stock(c)}; {ctx}"

        s1, p1 = c.call("CancelCheckout", creq, idempotency_key=key, timeout=30)
        assert s1.code == pb.OK, (
            f"the retry of the cancel with key {key!r} must replay the cancel's answer (OK, "
            f"CANCELED), got {h.describe_status(s1)}; {ctx}")
        got = pb.Payment.FromString(p1)
        assert (got.payment_id, got.status) == (pay.payment_id, pb.PAYMENT_STATUS_CANCELED), (
            f"the retry answered {got.payment_id} {cs.status_name(got.status)}; {ctx}")
        s2, p2 = c.call("CancelCheckout", creq, idempotency_key=key, timeout=30)
        assert s2.code == pb.OK and p2 == p1, (
            f"a second retry answered differently ({h.describe_status(s2)}); {ctx}")
        # Without the key the deal has no open checkout.
        status, _ = ws.cancel(c, deal)
        cs.expect_error(status, "FAILED_PRECONDITION", "checkout_not_open",
                        f"a new cancel without the key; {ctx}")
        assert _stock(c) == (10, 3), (
            f"the 4 units must be released exactly once (the bystander keeps its 3): "
            f"{_stock(c)}; {ctx}")
        assert cs.get_payment(c, deal_id=other_deal).status == pb.PAYMENT_STATUS_CREATED
        canceled = [e for e in cs.list_events(c, deal) if e.to_status == "CANCELED"]
        assert len(canceled) == 1, f"{len(canceled)} transitions to CANCELED; {ctx}"
    assert fake_stripe.session(pay.checkout_session_id)["status"] == "expired"
    expires = [r for r in fake_stripe.requests(cs.EXPIRE_ROUTE)
               if pay.checkout_session_id in r["path"]]
    assert len(expires) == 1, f"the retry reached Stripe again: {len(expires)} expire POSTs; {ctx}"


# ---------------------------------------------------------------------------
# RefundPayment


@pytest.mark.test_timeout(120)
@pytest.mark.parametrize("between", ["nothing", "another_refund", "stripe_settles"])
def test_refund_retry_after_crash_at_result_recorded_is_the_calls_answer(
        make_daemon, fake_stripe, pb, between):
    """The refund recorded by the crashed call is answered to its key as the call made it:
    the same refund row, with the status and the payment it had when the call committed,
    even when the payment moved on before the retry (`another_refund`: a second refund
    through the daemon; `stripe_settles`: Stripe answered `pending` and its refund.updated
    settled the row). Exactly one refund at Stripe for the key. Without a crash a retry
    replays the stored answer; a crash must not change that (checked on a control deal)."""
    pending = between == "stripe_settles"
    d = _daemon(make_daemon, fake_stripe)
    deal, key = f"deal-ans-refund-{between}", f"ans-refund-{between}"
    d.start()
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        pay = rs.paid_payment(c, fake_stripe, deal, SKU, 1, 1000, set_stock=10)
        control = rs.paid_payment(c, fake_stripe, deal + "-ctl", SKU, 1, 1000)
    assert d.stop() == 0
    if pending:
        fake_stripe.control("POST", "/_fake/config", {"refund_status": "pending"})

    answer = cs.crash_run(d, "refund_payment.result_recorded", lambda c: rs.refund(
        c, key, payment_id=pay.payment_id, amount=400, timeout=30)[0])
    d.start()
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        committed = rs.payment(c, pay.payment_id)
        at_fake = rs.fake_refunds(fake_stripe, pay.payment_intent_id)
        ctx = (f"crash at refund_payment.result_recorded, then {between} (the call answered: "
               f"{answer}); daemon after the restart {rs.describe_payment(committed)}; fake "
               f"{rs.describe_fake(at_fake)}")
        want_status = pb.REFUND_STATUS_PENDING if pending else pb.REFUND_STATUS_SUCCEEDED
        assert len(committed.refunds) == 1 and len(at_fake) == 1, f"test setup: {ctx}"
        row = committed.refunds[0]
        assert (row.amount, row.status, row.stripe_refund_id) == (
            400, want_status, at_fake[0]["id"]), f"test setup: the result was not recorded: {ctx}"
        want_payment = (pb.PAYMENT_STATUS_PAID, 0) if pending else (
            pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 400)

        # The state moves on before the caller retries.
        if between == "another_refund":
            other = rs.refund_ok(c, key + "-second", "a second refund", payment_id=pay.payment_id,
                                 amount=300)
            assert other.status == pb.REFUND_STATUS_SUCCEEDED, rs.describe_refund(other)
        elif pending:
            # Control (no crash): a key's answer stays the PENDING one after Stripe settles it.
            c_s, c_ref, c_p = rs.refund(c, key + "-ctl", payment_id=control.payment_id, amount=400)
            assert c_s.code == pb.OK and c_ref.status == pb.REFUND_STATUS_PENDING, (
                f"control: {h.describe_status(c_s)}")
            for rid in (row.stripe_refund_id, c_ref.stripe_refund_id):
                rs.resolve_at_stripe(fake_stripe, rid, "succeeded")
                outcomes = rs.deliver_events(
                    c, fake_stripe, rs.refund_events(fake_stripe, rid, ("refund.updated",)),
                    f"refund.updated of {rid}")
                assert outcomes == ["APPLIED"], f"refund.updated: {outcomes}; {ctx}"
            c_s2, c_ref2, c_p2 = rs.refund(c, key + "-ctl", payment_id=control.payment_id,
                                           amount=400)
            assert c_s2.code == pb.OK and c_p2 == c_p, (
                f"control without a crash: the retry must replay the stored answer (PENDING), "
                f"got {h.describe_status(c_s2)} {c_ref2 and rs.describe_refund(c_ref2)}")
            settled = rs.payment(c, pay.payment_id)
            assert [r.status for r in settled.refunds] == [pb.REFUND_STATUS_SUCCEEDED], (
                f"test setup: refund.updated did not settle the row: "
                f"{rs.describe_payment(settled)}")
        now = rs.payment(c, pay.payment_id)
        ctx += f"; before the retry {rs.describe_payment(now)}"

        posts = len(rs.refund_posts(fake_stripe))
        s1, r1, p1 = rs.refund(c, key, payment_id=pay.payment_id, amount=400)
        assert s1.code == pb.OK, f"the retry with the same key: {h.describe_status(s1)}; {ctx}"
        got = (r1.refund_id, r1.amount, r1.status, r1.stripe_refund_id)
        assert got == (row.refund_id, 400, want_status, row.stripe_refund_id), (
            f"the retry answered {rs.describe_refund(r1)}, the call committed "
            f"{rs.describe_refund(row)}; {ctx}")
        assert (r1.payment.status, r1.payment.amount_refunded,
                [x.refund_id for x in r1.payment.refunds]) == (
            *want_payment, [row.refund_id]), (
            f"the retry's payment is {rs.describe_payment(r1.payment)}: not the payment as the "
            f"call left it ({rs.pay_status(want_payment[0])}, refunded {want_payment[1]}, only "
            f"{row.refund_id}); {ctx}")
        s2, _, p2 = rs.refund(c, key, payment_id=pay.payment_id, amount=400)
        assert s2.code == pb.OK and p2 == p1, (
            f"a second retry answered differently ({h.describe_status(s2)}); {ctx}")
        assert len(rs.refund_posts(fake_stripe)) == posts, f"a retry reached Stripe: {ctx}"

        mine = [r for r in rs.fake_refunds(fake_stripe, pay.payment_intent_id)
                if (r.get("metadata") or {}).get("refund_id") == row.refund_id]
        assert len(mine) == 1, f"{len(mine)} refunds at Stripe for the key's row; {ctx}"
        rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, ctx)
        kinds = rs.kinds(c, deal)
        assert kinds.count("refund.requested") == (2 if between == "another_refund" else 1), (
            f"audit: {kinds}; {ctx}")


# ---------------------------------------------------------------------------
# AdjustStock and SetStock


@pytest.mark.test_timeout(90)
def test_adjust_stock_retry_after_crash_at_committed_is_applied_once(make_daemon, fake_stripe, pb):
    """AdjustStock +5 under key K, crash right after its transaction: the retry with K
    answers the level the call made (15) even after a later change, and +5 is applied once."""
    d = _daemon(make_daemon, fake_stripe)
    key = "ans-adjust-1"
    d.start()
    with d.client() as c:
        cs.set_stock(c, SKU, 10)
    assert d.stop() == 0

    msg = pb.StockAdjustment(sku=SKU, delta=5)
    answer = cs.crash_run(d, "adjust_stock.committed",
                          lambda c: c.call("AdjustStock", msg, idempotency_key=key)[0])
    d.start()
    ctx = f"crash at adjust_stock.committed (the call answered: {answer})"
    with d.client() as c:
        assert _stock(c) == (15, 0), f"test setup: the adjustment did not commit: {_stock(c)}; {ctx}"
        # Immediately: the call's answer, nothing applied again.
        s1, p1 = c.call("AdjustStock", msg, idempotency_key=key)
        assert s1.code == pb.OK, f"retry with the same key: {h.describe_status(s1)}; {ctx}"
        assert pb.Stock.FromString(p1).on_hand == 15, (
            f"the retry answered {_describe_stock(p1)}, expected on_hand 15; {ctx}")
        assert _stock(c) == (15, 0), (
            f"the retry applied the +5 again: on_hand {_stock(c)[0]}, expected 15; {ctx}")
        # After someone else's change: still the stored answer, still not applied again.
        cs.call_ok(c, "AdjustStock", pb.StockAdjustment(sku=SKU, delta=1))
        s2, p2 = c.call("AdjustStock", msg, idempotency_key=key)
        assert s2.code == pb.OK and p2 == p1, (
            f"after a later +1 the retry answered {h.describe_status(s2)} "
            f"{_describe_stock(p2) if s2.code == pb.OK else ''}, expected the stored "
            f"{_describe_stock(p1)}; {ctx}")
        assert _stock(c) == (16, 0), f"on_hand {_stock(c)[0]}, expected 15 + 1; {ctx}"
        status, _ = c.call("AdjustStock", pb.StockAdjustment(sku=SKU, delta=6), idempotency_key=key)
        cs.expect_error(status, "INVALID_ARGUMENT", "idempotency_key_reused",
                        f"the key with another delta; {ctx}")


@pytest.mark.test_timeout(90)
def test_set_stock_retry_after_crash_at_committed_is_the_stored_answer(make_daemon, fake_stripe,
                                                                       pb):
    """SetStock 7 under key K, crash right after its transaction: the retry with K answers
    on_hand 7 and does not set it again over a later change."""
    d = _daemon(make_daemon, fake_stripe)
    key = "ans-set-1"
    d.start()
    with d.client() as c:
        cs.set_stock(c, SKU, 2)
    assert d.stop() == 0

    msg = pb.StockUpdate(sku=SKU, on_hand=7)
    answer = cs.crash_run(d, "set_stock.committed",
                          lambda c: c.call("SetStock", msg, idempotency_key=key)[0])
    d.start()
    ctx = f"crash at set_stock.committed (the call answered: {answer})"
    with d.client() as c:
        assert _stock(c) == (7, 0), f"test setup: the SetStock did not commit: {_stock(c)}; {ctx}"
        cs.set_stock(c, SKU, 9)  # no key: a later change by someone else
        s1, p1 = c.call("SetStock", msg, idempotency_key=key)
        assert s1.code == pb.OK, f"retry with the same key: {h.describe_status(s1)}; {ctx}"
        assert pb.Stock.FromString(p1).on_hand == 7, (
            f"the retry answered {_describe_stock(p1)}, expected the call's on_hand 7; {ctx}")
        assert _stock(c) == (9, 0), (
            f"the retry set the stock again: on_hand {_stock(c)[0]}, expected the later 9; {ctx}")
        s2, p2 = c.call("SetStock", msg, idempotency_key=key)
        assert s2.code == pb.OK and p2 == p1, (
            f"a second retry answered differently ({h.describe_status(s2)}); {ctx}")
