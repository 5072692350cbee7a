"""A crash at every crash point of RefundPayment, then a restart (guarantees 3, 7 and 9).

For each name `paymentsd crash-points` prints that starts with
`refund_payment.` (and at least the three the contract names): pay a deal
(and a bystander deal), start the daemon with PAYMENTSD_CRASH_AT=<name>,
call RefundPayment (the process ends itself with status 137 at the point),
start it again on the same database and socket without the variable
(janitor every second), wait until the refund is no longer PENDING and no
operation is pending, then check:

- exactly one refund at the fake for the request, carrying the daemon's
  refund row in its metadata, every POST of it with the row's one
  Idempotency-Key (the janitor resumed it with the same key);
- the daemon's payment lists that one refund, SUCCEEDED, with the fake's
  refund id; amount_refunded and the payment's status follow; the daemon
  and the fake agree on the sums;
- the caller's retry with the same idempotency key answers that refund and
  makes no new one at the fake; a second retry answers the same;
- for a full refund with restock: the payment is REFUNDED and the stock is
  back exactly once (stock.restocked and order.refunded once);
- the bystander deal is untouched, and what remains refunds exactly.
"""

from __future__ import annotations

import subprocess
import time

import pytest

import checkout_support as cs
import paymentsd_harness as h
import refund_support as rs
from checkout_support import expect_error

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

REQUIRED = ("refund_payment.refund_recorded", "refund_payment.stripe_answered",
            "refund_payment.result_recorded")
SKU = "rc-sku"
ON_HAND = 10
QTY = 3
UNIT = 500
DEAL = "deal-rcrash"
BYSTANDER = "deal-rcrash-other"
KEY = "crash-refund-1"


def pytest_generate_tests(metafunc):
    if "crash_point" in metafunc.fixturenames:
        listed = [n for n in cs.crash_points() if n.startswith("refund_payment.")]
        # The required points always run: one the binary lacks fails in crash_run.
        names = list(REQUIRED) + sorted(set(listed) - set(REQUIRED))
        metafunc.parametrize("crash_point", names)


def test_refund_crash_points_are_listed(paymentsd_bin):
    res = subprocess.run([str(paymentsd_bin), "crash-points"], capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 0, f"paymentsd crash-points exited {res.returncode}: {res.stderr}"
    names = [l.strip() for l in res.stdout.splitlines() if l.strip()]
    assert len(names) == len(set(names)), f"duplicate crash point names: {names}"
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"crash points missing: {missing}; listed: {names}"


@pytest.mark.test_timeout(120)
@pytest.mark.parametrize("variant", ["partial", "full_restock"])
def test_refund_crash_and_restart(make_daemon, fake_stripe, pb, crash_point, variant):
    full = variant == "full_restock"
    total = QTY * UNIT
    amount = 0 if full else 400
    want_amount = total if full else 400
    env = {"STRIPE_API_BASE": fake_stripe.url, "PAYMENTSD_JANITOR_INTERVAL": "1"}
    d = make_daemon(env=env)

    # 1. Set up without the crash point: the deal paid, and a bystander paid.
    d.start()
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        pay = rs.paid_payment(c, fake_stripe, DEAL, SKU, QTY, UNIT, set_stock=ON_HAND)
        other = rs.paid_payment(c, fake_stripe, BYSTANDER, SKU, 1, UNIT)
        st = cs.get_stock(c, SKU)
        assert (st.on_hand, st.reserved) == (ON_HAND - QTY - 1, 0), f"test setup: stock {st}"
    assert d.stop() == 0

    # 2. The crash run.
    def call(c):
        return rs.refund(c, KEY, payment_id=pay.payment_id, amount=amount, restock=full,
                         timeout=30)[0]

    answer = cs.crash_run(d, crash_point, call)

    # 3. Restart on the same database and socket; the janitor (at start-up, then every
    #    second; and Reconcile) must finish the refund.
    d.start()
    settled = rs.wait_refunds_settled(d, pay.payment_id, timeout=25)
    pending = cs.wait_no_pending(d, timeout=20)

    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        at_fake = rs.fake_refunds(fake_stripe, pay.payment_intent_id)
        posts = rs.refund_posts(fake_stripe)

        def ctx():
            return (f"crash at {crash_point} ({variant}; the call answered: {answer}); daemon "
                    f"{rs.describe_payment(rs.payment(c, pay.payment_id))}; fake "
                    f"{rs.describe_fake(rs.fake_refunds(fake_stripe))}; POSTs "
                    f"{[(p['status'], p['dropped'], p['replayed']) for p in posts]}")

        print(f"\n[{crash_point}/{variant}] {ctx()}")  # shown with -s or on failure
        assert all(r.status != pb.REFUND_STATUS_PENDING for r in settled.refunds), (
            f"the refund is still PENDING 25 s after the restart: {ctx()}")
        assert pending == 0, f"{pending} operation(s) still pending after the restart: {ctx()}"
        assert len(settled.refunds) == 1, f"one RefundPayment, {len(settled.refunds)} rows: {ctx()}"
        row = settled.refunds[0]
        assert len(at_fake) == 1, (
            f"expected exactly one refund at Stripe for the request, found {len(at_fake)}: {ctx()}")
        assert (at_fake[0].get("metadata") or {}).get("refund_id") == row.refund_id, (
            f"the refund at Stripe does not carry the daemon's row {row.refund_id}: {ctx()}")
        rs.assert_one_key_per_row(fake_stripe, f"crash at {crash_point}")
        got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, ctx())
        assert (row.amount, row.status, row.stripe_refund_id) == (
            want_amount, pb.REFUND_STATUS_SUCCEEDED, at_fake[0]["id"]), (
            f"the row is {rs.describe_refund(row)}: {ctx()}")
        want_status = pb.PAYMENT_STATUS_REFUNDED if full else pb.PAYMENT_STATUS_PARTIALLY_REFUNDED
        assert (got.status, got.amount_refunded) == (want_status, want_amount), ctx()

        # The caller retries with its key: that refund, none new.
        s1, r1, p1 = rs.refund(c, KEY, payment_id=pay.payment_id, amount=amount, restock=full)
        assert s1.code == pb.OK, f"the retry with the same key: {h.describe_status(s1)}; {ctx()}"
        assert (r1.refund_id, r1.status, r1.amount, r1.stripe_refund_id) == (
            row.refund_id, pb.REFUND_STATUS_SUCCEEDED, want_amount, at_fake[0]["id"]), (
            f"the retry answered {rs.describe_refund(r1)}, the row is "
            f"{rs.describe_refund(row)}: {ctx()}")
        s2, _, p2 = rs.refund(c, KEY, payment_id=pay.payment_id, amount=amount, restock=full)
        assert s2.code == pb.OK and p2 == p1, (
            f"a second retry answered differently ({h.describe_status(s2)}): {ctx()}")
        assert len(rs.fake_refunds(fake_stripe)) == 1, f"a retry made a new refund: {ctx()}"

        kinds = rs.kinds(c, DEAL)
        assert kinds.count("refund.requested") == 1 and kinds.count("refund.succeeded") == 1, (
            f"audit: {kinds}; {ctx()}")
        st = cs.get_stock(c, SKU)
        if full:
            for kind in ("payment.refunded", "order.refunded", "stock.restocked"):
                assert kinds.count(kind) == 1, f"{kinds.count(kind)} x {kind}: {kinds}; {ctx()}"
            assert (st.on_hand, st.reserved) == (ON_HAND - 1, 0), (
                f"stock {st.on_hand}/{st.reserved}, expected the {QTY} units back exactly once "
                f"({ON_HAND - 1}/0): {ctx()}")
            status, _, _ = rs.refund(c, "crash-refund-2", payment_id=pay.payment_id, amount=0,
                                     restock=True)
            expect_error(status, "FAILED_PRECONDITION", "already_refunded",
                         f"a second refund after the crash: {ctx()}")
        else:
            assert kinds.count("stock.restocked") == 0, f"a partial refund restocked: {kinds}"
            assert (st.on_hand, st.reserved) == (ON_HAND - QTY - 1, 0), f"stock {st}: {ctx()}"
            # What remains refunds exactly.
            rest = rs.refund_ok(c, "crash-refund-2", f"the rest after {crash_point}",
                                payment_id=pay.payment_id, amount=0)
            assert (rest.amount, rest.status) == (total - 400, pb.REFUND_STATUS_SUCCEEDED), (
                f"the rest: {rs.describe_refund(rest)}; {ctx()}")
            final, fin_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, ctx())
            assert final.status == pb.PAYMENT_STATUS_REFUNDED and rs.live_sum(fin_fake) == total

        # The bystander is untouched.
        ob = rs.payment(c, other.payment_id)
        assert (ob.status, ob.amount_refunded, len(ob.refunds)) == (pb.PAYMENT_STATUS_PAID, 0, 0), (
            f"the bystander changed: {rs.describe_payment(ob)}")
        assert rs.fake_refunds(fake_stripe, other.payment_intent_id) == []
    assert cs.wait_no_pending(d, 10) == 0
    text = d.stderr_text()
    for secret in h.SECRETS:
        assert secret not in text, f"secret {secret[:6]}... in stderr"


@pytest.mark.test_timeout(120)
def test_refund_crash_while_stripe_keeps_it_pending(make_daemon, fake_stripe, pb, crash_point):
    """The same crash, when Stripe answers `pending`: after the restart the row is PENDING
    with the one Stripe refund's id, and refund.updated then settles it."""
    env = {"STRIPE_API_BASE": fake_stripe.url, "PAYMENTSD_JANITOR_INTERVAL": "1"}
    d = make_daemon(env=env)
    d.start()
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        pay = rs.paid_payment(c, fake_stripe, DEAL, SKU, QTY, UNIT, set_stock=ON_HAND)
    assert d.stop() == 0
    fake_stripe.control("POST", "/_fake/config", {"refund_status": "pending"})
    answer = cs.crash_run(d, crash_point, lambda c: rs.refund(
        c, KEY, payment_id=pay.payment_id, amount=0, restock=True, timeout=30)[0])
    d.start()

    # Wait until the row knows its Stripe refund (the janitor resumed it), or give up.
    deadline = time.monotonic() + 25
    while True:
        with d.client(timeout=rs.CALL_TIMEOUT) as c:
            rs.reconcile(c)
            got = rs.payment(c, pay.payment_id)
        if (got.refunds and all(r.stripe_refund_id for r in got.refunds)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        at_fake = rs.fake_refunds(fake_stripe, pay.payment_intent_id)
        ctx = (f"crash at {crash_point} with Stripe pending (the call answered: {answer}); "
               f"daemon {rs.describe_payment(got)}; fake {rs.describe_fake(at_fake)}")
        assert len(at_fake) == 1 and at_fake[0]["status"] == "pending", ctx
        assert [(r.amount, r.status, r.stripe_refund_id) for r in got.refunds] == [
            (QTY * UNIT, pb.REFUND_STATUS_PENDING, at_fake[0]["id"])], ctx
        assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PAID, 0), ctx
        assert cs.get_stock(c, SKU).on_hand == ON_HAND - QTY, f"restocked while pending: {ctx}"
        rs.assert_one_key_per_row(fake_stripe, ctx)

        rs.resolve_at_stripe(fake_stripe, at_fake[0]["id"], "succeeded")
        rs.deliver_events(c, fake_stripe, rs.refund_events(fake_stripe, at_fake[0]["id"],
                                                           ("refund.updated",)), ctx)
        final, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, ctx)
        assert (final.status, final.amount_refunded) == (pb.PAYMENT_STATUS_REFUNDED, QTY * UNIT), ctx
        st = cs.get_stock(c, SKU)
        kinds = rs.kinds(c, DEAL)
        assert st.on_hand == ON_HAND and kinds.count("stock.restocked") == 1, (
            f"stock {st}, audit {kinds}: {ctx}")
        s1, r1, _ = rs.refund(c, KEY, payment_id=pay.payment_id, amount=0, restock=True)
        assert s1.code == pb.OK and r1.refund_id == final.refunds[0].refund_id, (
            f"retry: {h.describe_status(s1)} {r1 and rs.describe_refund(r1)}: {ctx}")
        assert len(rs.fake_refunds(fake_stripe)) == 1, f"a retry made a new refund: {ctx}"
