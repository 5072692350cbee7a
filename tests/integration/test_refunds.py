"""RefundPayment and refunds made outside the service (guarantee 7: refunds add up).

- Guards before anything reaches Stripe: an unpaid payment (`payment_not_paid`),
  a fully refunded one (`already_refunded`), more than remains
  (`refund_exceeds_remaining`, detail `remaining`), a negative amount, unknown
  deals and payments, a missing or reused idempotency key.
- Partial refunds add up to the amount paid and never more, also under 20
  concurrent calls; `amount = 0` refunds exactly what remains.
- Every refund is a row first (PENDING), then `POST /v1/refunds` with the
  row's own Stripe idempotency key (`paymentsd-<refund_id>-refund`); when
  Stripe fails (5xx, dropped connections, an answer lost after applying, a
  4xx) a row ends with one refund at Stripe or none, never two, and a retry
  with the caller's key resumes that row.
- Stripe-pending refunds are resolved by `refund.updated`; refunds made in
  Stripe's dashboard arrive as `refund.created` / `charge.refunded` and are
  recorded once; a full refund moves the payment to REFUNDED and, with
  `restock`, returns the stock exactly once.

The janitor is slowed down (PAYMENTSD_JANITOR_INTERVAL=3600) except where a
test wants it, so that only the calls under test reach the fake and its
request counts are exact.
"""

from __future__ import annotations

import signal
import time

import pytest

import checkout_support as cs
import paymentsd_harness as h
import refund_support as rs
import webhook_support as ws
from checkout_support import expect_error

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

SKU = "rf-sku"
QUIET = {"PAYMENTSD_JANITOR_INTERVAL": "3600"}


def _posts_for(fake, refund_id: str) -> list[dict]:
    return [r for r in rs.refund_posts(fake)
            if ((r.get("params") or {}).get("metadata") or {}).get("refund_id") == refund_id]


def _count(kinds: list[str], kind: str) -> int:
    return sum(1 for k in kinds if k == kind)


# ---------------------------------------------------------------------------
# Guards


@pytest.mark.test_timeout(90)
def test_refund_of_an_unpaid_payment_is_payment_not_paid(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    cs.set_stock(c, SKU, 10)
    created = ws.open_checkout(c, "deal-rf-created", SKU, 1, 1000)
    canceled = ws.open_checkout(c, "deal-rf-canceled", SKU, 1, 1000)
    status, _ = ws.cancel(c, "deal-rf-canceled", reason="test")
    assert status.code == pb.OK, f"test setup: CancelCheckout {h.describe_status(status)}"

    n = 0
    for pay, state in ((created, "CREATED"), (canceled, "CANCELED")):
        for by in ("payment_id", "deal_id"):
            for amount in (0, 500):
                n += 1
                ref = {by: pay.payment_id if by == "payment_id" else pay.deal_id}
                status, got, _ = rs.refund(c, f"unpaid-{n}", amount=amount, **ref)
                expect_error(status, "FAILED_PRECONDITION", "payment_not_paid",
                             f"refund of {amount} of a {state} payment by {by}")
    assert rs.refund_posts(fake_stripe) == [], (
        f"a refused refund reached Stripe: {rs.refund_posts(fake_stripe)}")
    assert fake_stripe.counters()["refunds_created"] == 0
    for pay, want in ((created, pb.PAYMENT_STATUS_CREATED), (canceled, pb.PAYMENT_STATUS_CANCELED)):
        got = rs.payment(c, pay.payment_id)
        assert got.status == want and got.amount_refunded == 0 and not got.refunds, (
            f"a refused refund changed the payment: {rs.describe_payment(got)}")
        kinds = rs.kinds(c, pay.deal_id)
        assert not [k for k in kinds if k.startswith("refund.")], (
            f"a refused refund left refund rows in the audit trail: {kinds}")
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (10, 1), f"a refused refund changed stock: {st}"


@pytest.mark.test_timeout(90)
def test_refund_request_validation(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-valid", SKU, 1, 1000, set_stock=10)

    for amount in (100, 0):
        status, _, _ = rs.refund(c, None, payment_id=pay.payment_id, amount=amount)
        expect_error(status, "INVALID_ARGUMENT", "idempotency_key_required",
                     f"refund of {amount} without an idempotency key")
    status, _, _ = rs.refund(c, "neg-1", payment_id=pay.payment_id, amount=-1)
    expect_error(status, "INVALID_ARGUMENT", "invalid_field", "refund of -1", field="amount")
    status, _, _ = rs.refund(c, "neg-2", deal_id=pay.deal_id, amount=-1000)
    expect_error(status, "INVALID_ARGUMENT", "invalid_field", "refund of -1000 by deal",
                 field="amount")
    status, _, _ = rs.refund(c, "unknown-deal", deal_id="deal-nobody-has", amount=100)
    expect_error(status, "NOT_FOUND", "deal_not_found", "refund of an unknown deal")
    status, _, _ = rs.refund(c, "unknown-pay", payment_id="pay_nobodyhasthisone", amount=100)
    expect_error(status, "NOT_FOUND", "payment_not_found", "refund of an unknown payment")
    status, _, _ = rs.refund(c, "neither", amount=100)
    assert status.code == pb.INVALID_ARGUMENT, (
        f"refund naming neither a deal nor a payment: expected INVALID_ARGUMENT, got "
        f"{h.describe_status(status)}")
    status, _, _ = rs.refund(c, "bad-deal-id", deal_id="no spaces allowed!", amount=100)
    assert status.code == pb.INVALID_ARGUMENT, (
        f"refund with a malformed deal_id: expected INVALID_ARGUMENT, got "
        f"{h.describe_status(status)}")

    assert rs.refund_posts(fake_stripe) == [], "a refused refund reached Stripe"
    got = rs.payment(c, pay.payment_id)
    assert got.status == pb.PAYMENT_STATUS_PAID and got.amount_refunded == 0 and not got.refunds, (
        f"refused refunds changed the payment: {rs.describe_payment(got)}")
    # The payment is still refundable: the refusals reserved nothing.
    ref = rs.refund_ok(c, "valid-after", payment_id=pay.payment_id, amount=0)
    assert ref.amount == 1000 and ref.status == pb.REFUND_STATUS_SUCCEEDED, rs.describe_refund(ref)


# ---------------------------------------------------------------------------
# Partial refunds add up


@pytest.mark.test_timeout(120)
def test_partial_partial_too_much_then_the_rest(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = "deal-rf-partial"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 2, 500, set_stock=10)  # 1000 paid
    stock_before = cs.get_stock(c, SKU)
    intent = pay.payment_intent_id

    # 1. 300, reason requested_by_customer, by payment id.
    r1 = rs.refund_ok(c, "part-1", "first partial refund", payment_id=pay.payment_id, amount=300)
    ctx = f"first refund {rs.describe_refund(r1)}; payment {rs.describe_payment(r1.payment)}"
    assert rs.REFUND_ID_RE.match(r1.refund_id), f"refund_id {r1.refund_id!r} is not rfd_ + 24: {ctx}"
    assert (r1.payment_id, r1.amount, r1.status) == (pay.payment_id, 300,
                                                     pb.REFUND_STATUS_SUCCEEDED), ctx
    assert r1.stripe_refund_id.startswith("re_"), ctx
    assert r1.reason == pb.REFUND_REASON_REQUESTED_BY_CUSTOMER and not r1.failure_reason, ctx
    assert r1.created_at > 0, ctx
    assert r1.payment.payment_id == pay.payment_id, ctx
    assert (r1.payment.status, r1.payment.amount_refunded) == (
        pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 300), f"the Refund's payment after 300: {ctx}"

    # What Stripe got: one POST with the row's key and the documented parameters.
    posts = rs.refund_posts(fake_stripe)
    assert len(posts) == 1, f"one refund, {len(posts)} POST /v1/refunds: {posts}"
    params = posts[0]["params"]
    assert posts[0]["idempotency_key"] == f"paymentsd-{r1.refund_id}-refund", posts[0]
    assert params.get("payment_intent") == intent, params
    assert str(params.get("amount")) == "300", params
    assert params.get("reason") == "requested_by_customer", params
    md = params.get("metadata") or {}
    assert (md.get("refund_id"), md.get("payment_id"), md.get("deal_id")) == (
        r1.refund_id, pay.payment_id, deal), f"refund metadata at Stripe: {md}"

    # 2. 200, reason duplicate, by deal.
    r2 = rs.refund_ok(c, "part-2", "second partial refund", deal_id=deal, amount=200,
                      reason=pb.REFUND_REASON_DUPLICATE)
    assert (r2.amount, r2.status, r2.payment_id) == (200, pb.REFUND_STATUS_SUCCEEDED,
                                                     pay.payment_id), rs.describe_refund(r2)
    assert r2.refund_id != r1.refund_id and r2.stripe_refund_id != r1.stripe_refund_id
    assert (r2.payment.status, r2.payment.amount_refunded) == (
        pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 500), rs.describe_payment(r2.payment)
    assert rs.refund_posts(fake_stripe)[-1]["params"].get("reason") == "duplicate"

    # 3. Too much: 600 of the 500 that remain; refused before Stripe.
    n_posts = len(rs.refund_posts(fake_stripe))
    status, _, _ = rs.refund(c, "part-3", payment_id=pay.payment_id, amount=600)
    expect_error(status, "OUT_OF_RANGE", "refund_exceeds_remaining", "600 of the 500 left",
                 remaining="500")
    assert len(rs.refund_posts(fake_stripe)) == n_posts, "a refused refund reached Stripe"

    # 4. The rest (amount 0 = all that remains), reason fraudulent.
    r4 = rs.refund_ok(c, "part-4", "the rest", payment_id=pay.payment_id, amount=0,
                      reason=pb.REFUND_REASON_FRAUDULENT)
    assert (r4.amount, r4.status) == (500, pb.REFUND_STATUS_SUCCEEDED), (
        f"amount 0 after 300 + 200 of 1000 refunded {rs.describe_refund(r4)}, expected 500")
    assert (r4.payment.status, r4.payment.amount_refunded) == (
        pb.PAYMENT_STATUS_REFUNDED, 1000), rs.describe_payment(r4.payment)
    assert rs.refund_posts(fake_stripe)[-1]["params"].get("reason") == "fraudulent"

    # 5. Nothing remains: already_refunded, for 0 and for 1.
    for key, amount in (("part-5", 0), ("part-6", 1)):
        status, _, _ = rs.refund(c, key, payment_id=pay.payment_id, amount=amount)
        expect_error(status, "FAILED_PRECONDITION", "already_refunded",
                     f"refund of {amount} of a REFUNDED payment")
    assert len(rs.refund_posts(fake_stripe)) == 3

    # The daemon and Stripe agree; GetPayment lists the three refunds oldest first.
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "after the rest")
    assert [(r.refund_id, r.amount, r.status, r.stripe_refund_id) for r in got.refunds] == [
        (r.refund_id, r.amount, pb.REFUND_STATUS_SUCCEEDED, r.stripe_refund_id)
        for r in (r1, r2, r4)], f"GetPayment.refunds: {rs.describe_payment(got)}"
    assert [r["amount"] for r in at_fake] == [300, 200, 500], rs.describe_fake(at_fake)
    assert got.order_id == pay.order_id, "a refund changed the order id"
    rs.assert_one_key_per_row(fake_stripe)

    # The audit trail: per refund requested + succeeded; the transitions; no restock.
    kinds = rs.kinds(c, deal)
    assert _count(kinds, "refund.requested") == 3 and _count(kinds, "refund.succeeded") == 3, (
        f"expected 3 refund.requested and 3 refund.succeeded: {kinds}")
    assert _count(kinds, "payment.partially_refunded") >= 1, kinds
    assert _count(kinds, "payment.refunded") == 1 and _count(kinds, "order.refunded") == 1, kinds
    assert _count(kinds, "stock.restocked") == 0, f"restock=false restocked: {kinds}"
    assert kinds.index("refund.requested") < kinds.index("refund.succeeded"), kinds
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (stock_before.on_hand, stock_before.reserved), (
        f"refunds without restock changed stock: {st}")

    # Stripe's events about the daemon's own refunds change nothing (no double count).
    for r in (r1, r2, r4):
        rs.deliver_events(c, fake_stripe, rs.refund_events(fake_stripe, r.stripe_refund_id),
                          f"events of the daemon's refund {r.refund_id}")
    again = rs.payment(c, pay.payment_id)
    assert (len(again.refunds), again.amount_refunded, again.status) == (
        3, 1000, pb.PAYMENT_STATUS_REFUNDED), (
        f"Stripe's events about the daemon's own refunds changed the payment: "
        f"{rs.describe_payment(again)}")
    assert _count(rs.kinds(c, deal), "order.refunded") == 1


@pytest.mark.test_timeout(120)
def test_twenty_concurrent_refunds_never_exceed_the_payment(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        pay = rs.paid_payment(c, fake_stripe, "deal-rf-conc", SKU, 1, 100, set_stock=10)
    # Slow Stripe down so that refunds racing through the daemon would overlap there.
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="delay", ms=100, times=20)

    def one(i):
        with h.Client(d.socket_path, timeout=60) as cl:
            status, ref, _ = rs.refund(cl, f"conc-{i}", payment_id=pay.payment_id, amount=10,
                                       timeout=60)
            return status, ref

    results = cs.run_concurrently(20, one, timeout=90)
    ok, refused = rs.concurrent_refund_answers(results, 10, "concurrent refunds")

    got, at_fake = rs.assert_agrees_with_stripe(d.client(timeout=30), fake_stripe, pay.payment_id,
                                                "after 20 concurrent refunds of 10 on 100")
    ctx = (f"{len(ok)} OK, {len(refused)} refused; daemon {rs.describe_payment(got)}; "
           f"fake {rs.describe_fake(at_fake)}")
    assert rs.live_sum(at_fake) <= 100, f"over-refunded at Stripe: {ctx}"
    assert len(ok) == 10 and rs.live_sum(at_fake) == 100 and got.amount_refunded == 100, (
        f"20 refunds of 10 on a payment of 100 must refund exactly 100 in 10 refunds: {ctx}")
    assert got.status == pb.PAYMENT_STATUS_REFUNDED, ctx
    assert sorted(r.refund_id for r in ok) == sorted(r.refund_id for r in got.refunds), (
        f"the answered refunds are not the payment's refunds: {ctx}")
    rs.assert_one_key_per_row(fake_stripe, "concurrent refunds")
    assert len(rs.refund_posts(fake_stripe)) == 10, (
        f"{len(rs.refund_posts(fake_stripe))} POST /v1/refunds for 10 refunds "
        f"(a refused one reached Stripe?): {ctx}")


# ---------------------------------------------------------------------------
# Idempotency of RefundPayment


@pytest.mark.test_timeout(120)
def test_same_key_twice_and_across_a_restart_is_one_refund(make_daemon, fake_stripe, pb):
    d = make_daemon(env={"STRIPE_API_BASE": fake_stripe.url, **QUIET})
    d.start()
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        pay = rs.paid_payment(c, fake_stripe, "deal-rf-idem", SKU, 1, 1000, set_stock=10)
        s1, r1, p1 = rs.refund(c, "idem-1", payment_id=pay.payment_id, amount=400)
        assert s1.code == pb.OK, f"first call: {h.describe_status(s1)}"
        s2, r2, p2 = rs.refund(c, "idem-1", payment_id=pay.payment_id, amount=400)
        assert s2.code == pb.OK, f"same key again: {h.describe_status(s2)}"
        assert p2 == p1, (f"the same key answered another Refund: first "
                          f"{rs.describe_refund(r1)}, again {rs.describe_refund(r2)}")
        # Concurrent repeats of a new key wait for the first and get its answer.
        fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="delay", ms=500, times=1)

        def same(i):
            with h.Client(d.socket_path, timeout=40) as cl:
                return rs.refund(cl, "idem-conc", payment_id=pay.payment_id, amount=100,
                                 timeout=40)

        results = cs.run_concurrently(5, same, timeout=60)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"a call raised {errors[0]!r}"
        bad = [h.describe_status(s) for s, _, _ in results if s.code != pb.OK]
        assert not bad, f"concurrent calls with one key: {bad}"
        assert len({p for _, _, p in results}) == 1, (
            f"concurrent calls with one key got different answers: "
            f"{[rs.describe_refund(r) for _, r, _ in results]}")
        got = rs.payment(c, pay.payment_id)
        assert (got.amount_refunded, len(got.refunds)) == (500, 2), rs.describe_payment(got)
    assert d.stop(signal.SIGTERM) == 0

    d.start()  # same database and socket
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        s3, r3, p3 = rs.refund(c, "idem-1", payment_id=pay.payment_id, amount=400)
        assert s3.code == pb.OK, f"same key after a restart: {h.describe_status(s3)}"
        assert p3 == p1, (f"after a restart the same key answered another Refund: first "
                          f"{rs.describe_refund(r1)}, now {rs.describe_refund(r3)}")
        status, _, _ = rs.refund(c, "idem-1", payment_id=pay.payment_id, amount=300)
        expect_error(status, "INVALID_ARGUMENT", "idempotency_key_reused",
                     "same key, other amount, after a restart")
        got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id,
                                                    "after the restart")
        assert [r["amount"] for r in at_fake] == [400, 100], (
            f"refunds at Stripe: {rs.describe_fake(at_fake)}, expected one of 400 and one of 100")
        assert (got.amount_refunded, got.status) == (500, pb.PAYMENT_STATUS_PARTIALLY_REFUNDED), (
            rs.describe_payment(got))
    assert len(rs.refund_posts(fake_stripe)) == 2, (
        f"POST /v1/refunds: {[(r['idempotency_key'], r['status']) for r in rs.refund_posts(fake_stripe)]}")


@pytest.mark.test_timeout(90)
def test_same_key_with_another_payload_is_refused(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-reuse", SKU, 1, 1000, set_stock=10)
    other = rs.paid_payment(c, fake_stripe, "deal-rf-reuse-2", SKU, 1, 1000)
    first = rs.refund_ok(c, "reuse-1", payment_id=pay.payment_id, amount=100)
    cases = [
        ("other amount", dict(payment_id=pay.payment_id, amount=200)),
        ("amount 0", dict(payment_id=pay.payment_id, amount=0)),
        ("other reason", dict(payment_id=pay.payment_id, amount=100,
                              reason=pb.REFUND_REASON_FRAUDULENT)),
        ("restock", dict(payment_id=pay.payment_id, amount=100, restock=True)),
        ("other payment", dict(payment_id=other.payment_id, amount=100)),
        ("by deal instead of payment", dict(deal_id=pay.deal_id, amount=100)),
    ]
    for label, kw in cases:
        status, _, _ = rs.refund(c, "reuse-1", **kw)
        expect_error(status, "INVALID_ARGUMENT", "idempotency_key_reused", label)
    # Another method with the key is refused too.
    status, _ = c.call("AdjustStock", pb.StockAdjustment(sku=SKU, delta=1),
                       idempotency_key="reuse-1")
    expect_error(status, "INVALID_ARGUMENT", "idempotency_key_reused", "AdjustStock, same key")
    assert len(rs.refund_posts(fake_stripe)) == 1, "a refused reuse reached Stripe"
    for p_id, want in ((pay.payment_id, 100), (other.payment_id, 0)):
        got = rs.payment(c, p_id)
        assert got.amount_refunded == want and len(got.refunds) == (1 if want else 0), (
            f"a refused reuse changed {rs.describe_payment(got)}")
    assert rs.payment(c, pay.payment_id).refunds[0].refund_id == first.refund_id


# ---------------------------------------------------------------------------
# Stripe fails


@pytest.mark.test_timeout(120)
@pytest.mark.parametrize("resumed_by", ["retry", "reconcile", "janitor"])
def test_stripe_5xx_leaves_a_pending_row_that_is_resumed_once(pay_daemon, fake_stripe, pb,
                                                              resumed_by):
    env = {"PAYMENTSD_JANITOR_INTERVAL": "1"} if resumed_by == "janitor" else QUIET
    d = pay_daemon(env=env)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-500", SKU, 1, 1000, set_stock=10)
    # More 500s than the daemon's retries; cleared after the call.
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="status", status=500, times=50)
    status, _, _ = rs.refund(c, "k-500", payment_id=pay.payment_id, amount=400)
    if resumed_by != "janitor":
        fake_stripe.clear_faults()
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "refund while Stripe answers 500")
    posts = rs.refund_posts(fake_stripe)
    assert posts and all(p["status"] == 500 for p in posts), posts
    keys = rs.assert_one_key_per_row(fake_stripe, "500s")
    assert len(keys) == 1, f"the retries were for several refund rows: {keys}"
    (row_id,) = keys
    assert rs.REFUND_ID_RE.match(row_id), f"metadata refund_id {row_id!r}"

    if resumed_by != "janitor":
        # The row is PENDING, and it counts against what remains.
        got = rs.payment(c, pay.payment_id)
        assert [(r.refund_id, r.amount, r.status) for r in got.refunds] == [
            (row_id, 400, pb.REFUND_STATUS_PENDING)], (
            f"after stripe_unavailable the refund must be a PENDING row: {rs.describe_payment(got)}")
        assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PAID, 0), (
            rs.describe_payment(got))
        status, _, _ = rs.refund(c, "k-500-big", payment_id=pay.payment_id, amount=700)
        expect_error(status, "OUT_OF_RANGE", "refund_exceeds_remaining",
                     "700 while 400 are pending of 1000", remaining="600")

    if resumed_by == "retry":
        ref = rs.refund_ok(c, "k-500", "retry with the same key after the 500s",
                           payment_id=pay.payment_id, amount=400)
    elif resumed_by == "reconcile":
        rs.reconcile(c)
        got = rs.payment(c, pay.payment_id)
        assert [r.status for r in got.refunds] == [pb.REFUND_STATUS_SUCCEEDED], (
            f"Reconcile did not resume the pending refund: {rs.describe_payment(got)}")
        ref = rs.refund_ok(c, "k-500", "retry with the same key after Reconcile",
                           payment_id=pay.payment_id, amount=400)
    else:
        fake_stripe.clear_faults()
        got = rs.wait_refunds_settled(d, pay.payment_id, timeout=20, reconcile_every=3600)
        assert [r.status for r in got.refunds] == [pb.REFUND_STATUS_SUCCEEDED], (
            f"the janitor did not resume the pending refund within 20 s: "
            f"{rs.describe_payment(got)}")
        ref = rs.refund_ok(c, "k-500", "retry with the same key after the janitor",
                           payment_id=pay.payment_id, amount=400)
    assert ref.refund_id == row_id, (
        f"the retry with the same key made refund {ref.refund_id}, not the pending row {row_id}")
    assert (ref.status, ref.amount) == (pb.REFUND_STATUS_SUCCEEDED, 400), rs.describe_refund(ref)
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id,
                                                f"500s then resumed by {resumed_by}")
    assert len(at_fake) == 1 and got.amount_refunded == 400, (
        f"expected one refund of 400: {rs.describe_payment(got)} / {rs.describe_fake(at_fake)}")
    assert got.status == pb.PAYMENT_STATUS_PARTIALLY_REFUNDED
    rs.assert_one_key_per_row(fake_stripe, f"resumed by {resumed_by}")
    # Once more: nothing new.
    n = len(rs.refund_posts(fake_stripe))
    again = rs.refund_ok(c, "k-500", "third call", payment_id=pay.payment_id, amount=400)
    assert again.refund_id == row_id and len(rs.fake_refunds(fake_stripe)) == 1
    assert len(rs.refund_posts(fake_stripe)) == n, "a finished refund was sent to Stripe again"
    assert cs.health(c).pending_operations == 0


@pytest.mark.test_timeout(90)
def test_a_refused_reuse_does_not_take_the_key_of_a_pending_refund(pay_daemon, fake_stripe, pb):
    """The key of a refund left PENDING by stripe_unavailable belongs to that request: another
    payload with it is idempotency_key_reused, and that refusal must not take the key over,
    so the caller's retry with the original payload still resumes its refund."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-poison", SKU, 1, 1000, set_stock=10)
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="status", status=500, times=50)
    status, _, _ = rs.refund(c, "k-poison", payment_id=pay.payment_id, amount=400)
    fake_stripe.clear_faults()
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "refund while Stripe answers 500")
    [row] = rs.payment(c, pay.payment_id).refunds
    for label, kw in (("other amount", dict(amount=300)), ("restock", dict(amount=400, restock=True))):
        status, _, _ = rs.refund(c, "k-poison", payment_id=pay.payment_id, **kw)
        expect_error(status, "INVALID_ARGUMENT", "idempotency_key_reused",
                     f"the key of a pending refund, {label}")
    assert len(rs.payment(c, pay.payment_id).refunds) == 1
    status, ref, _ = rs.refund(c, "k-poison", payment_id=pay.payment_id, amount=400)
    assert status.code == pb.OK, (
        f"the retry with the original payload after a refused reuse of its key: expected OK "
        f"(the pending refund {row.refund_id} resumed), got {h.describe_status(status)} -- "
        f"probably the refused reuse's answer was stored under the key with the reusing "
        f"payload's hash")
    assert ref.refund_id == row.refund_id and ref.status == pb.REFUND_STATUS_SUCCEEDED, (
        rs.describe_refund(ref))
    assert len(rs.fake_refunds(fake_stripe)) == 1


@pytest.mark.test_timeout(90)
def test_the_key_of_a_pending_refund_is_not_free_for_another_method(pay_daemon, fake_stripe, pb):
    """protocol.md section 5: a key used with one method is idempotency_key_reused with
    another. The key of a refund left PENDING by stripe_unavailable is used (its row holds it):
    AdjustStock with it must be refused, not executed."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-keymethod", SKU, 1, 1000, set_stock=10)
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="status", status=500, times=50)
    status, _, _ = rs.refund(c, "k-method", payment_id=pay.payment_id, amount=400)
    fake_stripe.clear_faults()
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "refund while Stripe answers 500")
    before = cs.get_stock(c, SKU).on_hand
    status, _ = c.call("AdjustStock", pb.StockAdjustment(sku=SKU, delta=5), idempotency_key="k-method")
    after = cs.get_stock(c, SKU).on_hand
    expect_error(status, "INVALID_ARGUMENT", "idempotency_key_reused",
                 f"AdjustStock with the key of a pending refund (stock {before} -> {after})")
    assert after == before, f"AdjustStock ran with a refund's key: stock {before} -> {after}"
    ref = rs.refund_ok(c, "k-method", "the refund's retry", payment_id=pay.payment_id, amount=400)
    assert ref.status == pb.REFUND_STATUS_SUCCEEDED and len(rs.fake_refunds(fake_stripe)) == 1


@pytest.mark.test_timeout(90)
def test_answer_lost_after_applying_is_recovered_from_stripe(pay_daemon, fake_stripe, pb):
    """apply_then_drop once: the retry inside the call is answered from Stripe's memory."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-atd", SKU, 1, 1000, set_stock=10)
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="apply_then_drop", times=1)
    ref = rs.refund_ok(c, "k-atd", "refund whose first answer is lost",
                       payment_id=pay.payment_id, amount=250)
    posts = rs.refund_posts(fake_stripe)
    assert len(posts) >= 2 and posts[0]["dropped"] and posts[-1]["replayed"], (
        f"expected a dropped POST then a replayed retry: "
        f"{[(p['status'], p['dropped'], p['replayed']) for p in posts]}")
    at_fake = rs.fake_refunds(fake_stripe)
    assert len(at_fake) == 1, f"the lost answer made {len(at_fake)} refunds at Stripe"
    assert (ref.status, ref.stripe_refund_id, ref.amount) == (
        pb.REFUND_STATUS_SUCCEEDED, at_fake[0]["id"], 250), rs.describe_refund(ref)
    rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "apply_then_drop once")
    rs.assert_one_key_per_row(fake_stripe)


@pytest.mark.test_timeout(120)
@pytest.mark.parametrize("kind", ["apply_then_drop", "drop"])
def test_stripe_unreachable_then_resumed_one_refund_or_none(pay_daemon, fake_stripe, pb, kind):
    """Every attempt of the call is cut off (after applying, or before): UNAVAILABLE and a
    PENDING row; Reconcile resumes it with the same Stripe key: exactly one refund."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, f"deal-rf-{kind}", SKU, 1, 1000, set_stock=10)
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind=kind, times=50)
    status, _, _ = rs.refund(c, f"k-{kind}", payment_id=pay.payment_id, amount=300)
    fake_stripe.clear_faults()
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", f"refund while every POST is {kind}")
    applied = len(rs.fake_refunds(fake_stripe))
    assert applied == (1 if kind == "apply_then_drop" else 0), (
        f"test setup: {applied} refund(s) at the fake after the {kind} attempts "
        f"(posts {[(p['dropped'], p['replayed']) for p in rs.refund_posts(fake_stripe)]})")
    got = rs.payment(c, pay.payment_id)
    assert [(r.amount, r.status) for r in got.refunds] == [(300, pb.REFUND_STATUS_PENDING)], (
        f"after stripe_unavailable: {rs.describe_payment(got)}")

    rs.reconcile(c)
    got = rs.wait_refunds_settled(d, pay.payment_id, timeout=15)
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id,
                                                f"{kind} then Reconcile")
    assert len(at_fake) == 1 and at_fake[0]["amount"] == 300, (
        f"expected exactly one refund of 300 at Stripe: {rs.describe_fake(at_fake)}")
    assert [(r.amount, r.status) for r in got.refunds] == [(300, pb.REFUND_STATUS_SUCCEEDED)], (
        rs.describe_payment(got))
    ref = rs.refund_ok(c, f"k-{kind}", "retry with the same key after Reconcile",
                       payment_id=pay.payment_id, amount=300)
    assert ref.refund_id == got.refunds[0].refund_id and ref.stripe_refund_id == at_fake[0]["id"], (
        f"the retry answered {rs.describe_refund(ref)}; the row is {rs.describe_payment(got)}")
    assert len(rs.fake_refunds(fake_stripe)) == 1
    rs.assert_one_key_per_row(fake_stripe, kind)


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("code", ["charge_disputed", None], ids=["with_code", "without_code"])
def test_stripe_400_is_a_failed_refund_and_frees_the_amount(pay_daemon, fake_stripe, pb, code):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = f"deal-rf-400-{bool(code)}"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 1, 1000, set_stock=10)
    fault = {"kind": "status", "status": 400, "times": 1}
    if code:
        fault["error"] = {"type": "invalid_request_error", "code": code,
                          "message": "This charge is disputed."}
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, **fault)
    status, ref, p1 = rs.refund(c, "k-400", payment_id=pay.payment_id, amount=0)
    assert status.code == pb.OK, (
        f"a refund Stripe refuses (400) is a FAILED Refund, not an error; got "
        f"{h.describe_status(status)}")
    assert (ref.status, ref.amount) == (pb.REFUND_STATUS_FAILED, 1000), rs.describe_refund(ref)
    assert ref.failure_reason, f"a FAILED refund must say why: {rs.describe_refund(ref)}"
    if code:
        assert code in ref.failure_reason, (
            f"failure_reason {ref.failure_reason!r} does not hold Stripe's code {code!r}")
    assert not ref.stripe_refund_id, rs.describe_refund(ref)
    assert (ref.payment.status, ref.payment.amount_refunded) == (pb.PAYMENT_STATUS_PAID, 0), (
        rs.describe_payment(ref.payment))
    assert len(rs.refund_posts(fake_stripe)) == 1, "a 4xx must not be retried"
    kinds = rs.kinds(c, deal)
    assert "refund.requested" in kinds and "refund.failed" in kinds, kinds
    # Same key: the same answer, nothing sent again.
    s2, _, p2 = rs.refund(c, "k-400", payment_id=pay.payment_id, amount=0)
    assert s2.code == pb.OK and p2 == p1, f"same key after a FAILED refund: {h.describe_status(s2)}"
    assert len(rs.refund_posts(fake_stripe)) == 1
    # The amount is free again: the whole payment refunds.
    ok = rs.refund_ok(c, "k-400-again", "refund after a failed one", payment_id=pay.payment_id,
                      amount=0)
    assert (ok.status, ok.amount) == (pb.REFUND_STATUS_SUCCEEDED, 1000), (
        f"a FAILED refund must free its amount: {rs.describe_refund(ok)}")
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "400 then refund")
    assert [r.status for r in got.refunds] == [pb.REFUND_STATUS_FAILED, pb.REFUND_STATUS_SUCCEEDED]
    assert got.status == pb.PAYMENT_STATUS_REFUNDED and len(at_fake) == 1


@pytest.mark.test_timeout(120)
def test_mixed_stripe_failures_resolve_to_one_refund_or_none(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-mixed", SKU, 1, 1000, set_stock=10)
    answers = {}
    plan = [("m-400", {"kind": "status", "status": 400, "times": 1,
                       "error": {"code": "charge_disputed"}}),
            ("m-500", {"kind": "status", "status": 500, "times": 50}),
            ("m-atd", {"kind": "apply_then_drop", "times": 50}),
            ("m-drop", {"kind": "drop", "times": 50}),
            ("m-ok", None)]
    for key, fault in plan:
        if fault:
            fake_stripe.add_fault(rs.REFUNDS_ROUTE, **fault)
        status, ref, _ = rs.refund(c, key, payment_id=pay.payment_id, amount=100)
        fake_stripe.clear_faults()
        answers[key] = (h.describe_status(status), ref and rs.describe_refund(ref))
        assert status.code == pb.OK or (status.code, status.reason) == (
            pb.UNAVAILABLE, "stripe_unavailable"), f"{key}: {answers[key]}"
    ctx = f"answers {answers}"
    rs.reconcile(c)
    got = rs.wait_refunds_settled(d, pay.payment_id, timeout=20)
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, ctx)
    assert len(got.refunds) == 5, f"5 RefundPayment calls, {len(got.refunds)} rows: {ctx}"
    by_key = {}
    for key, _ in plan:
        ref = rs.refund_ok(c, key, f"retry {key}", payment_id=pay.payment_id, amount=100)
        by_key[key] = ref
    ids = [r.refund_id for r in by_key.values()]
    assert len(set(ids)) == 5 and set(ids) == {r.refund_id for r in got.refunds}, (
        f"the retries answered rows {ids}, the payment has "
        f"{[r.refund_id for r in got.refunds]}: {ctx}")
    assert by_key["m-400"].status == pb.REFUND_STATUS_FAILED, rs.describe_refund(by_key["m-400"])
    for key in ("m-500", "m-atd", "m-drop", "m-ok"):
        assert by_key[key].status == pb.REFUND_STATUS_SUCCEEDED, (
            f"{key} ended {rs.describe_refund(by_key[key])} once Stripe was back: {ctx}")
    assert len(at_fake) == 4 and rs.live_sum(at_fake) == 400, (
        f"expected 4 refunds of 100 at Stripe: {rs.describe_fake(at_fake)}; {ctx}")
    assert len(rs.fake_refunds(fake_stripe)) == 4, "a retry made another refund at Stripe"
    assert (got.amount_refunded, got.status) == (400, pb.PAYMENT_STATUS_PARTIALLY_REFUNDED)
    rs.assert_one_key_per_row(fake_stripe, "mixed failures")
    assert cs.health(c).pending_operations == 0


# ---------------------------------------------------------------------------
# Stripe-pending refunds


@pytest.mark.test_timeout(90)
def test_stripe_pending_refund_then_succeeded(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = "deal-rf-pending-ok"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 1, 1000, set_stock=10)
    fake_stripe.control("POST", "/_fake/config", {"refund_status": "pending"})
    status, ref, p1 = rs.refund(c, "pend-1", payment_id=pay.payment_id, amount=400)
    assert status.code == pb.OK, h.describe_status(status)
    assert (ref.status, ref.amount) == (pb.REFUND_STATUS_PENDING, 400), rs.describe_refund(ref)
    assert ref.stripe_refund_id.startswith("re_"), rs.describe_refund(ref)
    got = rs.payment(c, pay.payment_id)
    assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PAID, 0), (
        f"a Stripe-pending refund must not count in amount_refunded: {rs.describe_payment(got)}")
    assert [(r.refund_id, r.status) for r in got.refunds] == [
        (ref.refund_id, pb.REFUND_STATUS_PENDING)], rs.describe_payment(got)
    assert "refund.pending" in rs.kinds(c, deal), rs.kinds(c, deal)
    # ... but it counts against what remains.
    status, _, _ = rs.refund(c, "pend-2", payment_id=pay.payment_id, amount=700)
    expect_error(status, "OUT_OF_RANGE", "refund_exceeds_remaining",
                 "700 while 400 are pending at Stripe", remaining="600")

    resolve = rs.resolve_at_stripe(fake_stripe, ref.stripe_refund_id, "succeeded")
    assert resolve["status"] == "succeeded"
    [updated] = rs.refund_events(fake_stripe, ref.stripe_refund_id, ("refund.updated",))
    outcomes = rs.deliver_events(c, fake_stripe, [updated], "refund.updated succeeded")
    assert outcomes == ["APPLIED"], outcomes
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "after refund.updated")
    assert [(r.refund_id, r.status) for r in got.refunds] == [
        (ref.refund_id, pb.REFUND_STATUS_SUCCEEDED)], rs.describe_payment(got)
    assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 400)
    kinds = rs.kinds(c, deal)
    assert kinds.index("refund.pending") < kinds.index("refund.succeeded"), kinds
    assert rs.deliver_events(c, fake_stripe, [updated], "again") == ["DUPLICATE"]
    # The caller's retry replays the stored answer and sends nothing.
    n = len(rs.refund_posts(fake_stripe))
    s2, r2, _ = rs.refund(c, "pend-1", payment_id=pay.payment_id, amount=400)
    assert s2.code == pb.OK and r2.refund_id == ref.refund_id, h.describe_status(s2)
    assert len(rs.refund_posts(fake_stripe)) == n
    # The rest, still pending at Stripe, then succeeded: REFUNDED.
    rest = rs.refund_ok(c, "pend-3", "the rest", payment_id=pay.payment_id, amount=0)
    assert (rest.amount, rest.status) == (600, pb.REFUND_STATUS_PENDING), rs.describe_refund(rest)
    assert rs.payment(c, pay.payment_id).status == pb.PAYMENT_STATUS_PARTIALLY_REFUNDED
    rs.resolve_at_stripe(fake_stripe, rest.stripe_refund_id, "succeeded")
    rs.deliver_events(c, fake_stripe,
                      rs.refund_events(fake_stripe, rest.stripe_refund_id, ("refund.updated",)),
                      "refund.updated of the rest")
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "the rest succeeded")
    assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_REFUNDED, 1000)
    assert _count(rs.kinds(c, deal), "order.refunded") == 1


@pytest.mark.test_timeout(90)
def test_stripe_pending_refund_then_failed_frees_the_amount(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = "deal-rf-pending-ko"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 1, 1000, set_stock=10)
    fake_stripe.control("POST", "/_fake/config", {"refund_status": "pending"})
    ref = rs.refund_ok(c, "pk-1", "a refund Stripe keeps pending", payment_id=pay.payment_id,
                       amount=0)
    assert (ref.status, ref.amount) == (pb.REFUND_STATUS_PENDING, 1000), rs.describe_refund(ref)
    # Nothing remains while it is pending, but the payment is not REFUNDED.
    status, _, _ = rs.refund(c, "pk-2", payment_id=pay.payment_id, amount=0)
    expect_error(status, "OUT_OF_RANGE", "refund_exceeds_remaining",
                 "amount 0 while everything is pending", remaining="0")
    status, _, _ = rs.refund(c, "pk-3", payment_id=pay.payment_id, amount=1)
    expect_error(status, "OUT_OF_RANGE", "refund_exceeds_remaining",
                 "1 while everything is pending", remaining="0")

    rs.resolve_at_stripe(fake_stripe, ref.stripe_refund_id, "failed", "expired_or_canceled_card")
    [updated] = rs.refund_events(fake_stripe, ref.stripe_refund_id, ("refund.updated",))
    assert rs.deliver_events(c, fake_stripe, [updated], "refund.updated failed") == ["APPLIED"]
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "after failed")
    assert [(r.refund_id, r.status) for r in got.refunds] == [
        (ref.refund_id, pb.REFUND_STATUS_FAILED)], rs.describe_payment(got)
    assert got.refunds[0].failure_reason, f"a FAILED refund must say why: {rs.describe_payment(got)}"
    assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PAID, 0), rs.describe_payment(got)
    # refund.failed names the same change: nothing more happens.
    failed_evs = rs.refund_events(fake_stripe, ref.stripe_refund_id, ("refund.failed",))
    outcomes = rs.deliver_events(c, fake_stripe, failed_evs, "refund.failed")
    assert "DUPLICATE" not in outcomes, f"a new event id answered DUPLICATE: {outcomes}"
    again = rs.payment(c, pay.payment_id)
    assert [(r.status, r.amount) for r in again.refunds] == [(pb.REFUND_STATUS_FAILED, 1000)]
    kinds = rs.kinds(c, deal)
    assert kinds.index("refund.pending") < kinds.index("refund.failed"), kinds
    assert "payment.refunded" not in kinds and "order.refunded" not in kinds, kinds

    # The money is refundable again.
    fake_stripe.control("POST", "/_fake/config", {"refund_status": "succeeded"})
    ok = rs.refund_ok(c, "pk-4", "after the failed refund", payment_id=pay.payment_id, amount=0)
    assert (ok.amount, ok.status) == (1000, pb.REFUND_STATUS_SUCCEEDED), rs.describe_refund(ok)
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "refunded at last")
    assert got.status == pb.PAYMENT_STATUS_REFUNDED and len(at_fake) == 2


# ---------------------------------------------------------------------------
# Refunds made outside the service


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("order", [("refund.created", "charge.refunded"),
                                   ("charge.refunded", "refund.created")],
                         ids=["refund_first", "charge_first"])
def test_dashboard_refund_then_a_refund_through_the_daemon(pay_daemon, fake_stripe, pb, order):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = f"deal-rf-dash-{order[0]}"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 1, 1000, set_stock=10)
    outside = rs.dashboard_refund(fake_stripe, pay.payment_intent_id, 300)
    evs = rs.refund_events(fake_stripe, outside["id"])
    evs.sort(key=lambda e: order.index(e["type"]))
    assert [e["type"] for e in evs] == list(order), f"test setup: events {[e['type'] for e in evs]}"
    outcomes = rs.deliver_events(c, fake_stripe, evs, "dashboard refund")
    assert outcomes == ["APPLIED", "APPLIED"], f"dashboard refund events answered {outcomes}"
    assert rs.deliver_events(c, fake_stripe, evs, "again") == ["DUPLICATE", "DUPLICATE"]

    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "dashboard refund")
    assert [(r.amount, r.status, r.stripe_refund_id) for r in got.refunds] == [
        (300, pb.REFUND_STATUS_SUCCEEDED, outside["id"])], (
        f"the dashboard refund must be recorded once: {rs.describe_payment(got)}")
    assert got.refunds[0].refund_id, "an outside refund without a refund_id"
    assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 300)

    status, _, _ = rs.refund(c, "dash-1", payment_id=pay.payment_id, amount=800)
    expect_error(status, "OUT_OF_RANGE", "refund_exceeds_remaining",
                 "800 after a dashboard refund of 300 of 1000", remaining="700")
    assert rs.refund_posts(fake_stripe) == [], "a refused refund reached Stripe"
    rest = rs.refund_ok(c, "dash-2", "the rest after a dashboard refund",
                        payment_id=pay.payment_id, amount=0)
    assert (rest.amount, rest.status) == (700, pb.REFUND_STATUS_SUCCEEDED), rs.describe_refund(rest)
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "the rest")
    assert (got.status, got.amount_refunded, rs.live_sum(at_fake)) == (
        pb.PAYMENT_STATUS_REFUNDED, 1000, 1000), rs.describe_payment(got)
    assert [r.stripe_refund_id for r in got.refunds] == [outside["id"], rest.stripe_refund_id], (
        f"GetPayment.refunds must list both, oldest first: {rs.describe_payment(got)}")
    # The daemon's own refund's events: recorded already, nothing counted twice.
    rs.deliver_events(c, fake_stripe, rs.refund_events(fake_stripe, rest.stripe_refund_id),
                      "events of the daemon's refund")
    again = rs.payment(c, pay.payment_id)
    assert (len(again.refunds), again.amount_refunded) == (2, 1000), rs.describe_payment(again)
    kinds = rs.kinds(c, deal)
    assert _count(kinds, "payment.refunded") == 1 and _count(kinds, "order.refunded") == 1, kinds


@pytest.mark.test_timeout(90)
def test_full_dashboard_refund_refunds_the_payment_without_restock(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = "deal-rf-dash-full"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 2, 500, set_stock=10)
    outside = rs.dashboard_refund(fake_stripe, pay.payment_intent_id, None)
    assert outside["amount"] == 1000
    rs.deliver_events(c, fake_stripe, rs.refund_events(fake_stripe, outside["id"]), "full")
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "full dashboard refund")
    assert (got.status, got.amount_refunded, len(got.refunds)) == (
        pb.PAYMENT_STATUS_REFUNDED, 1000, 1), rs.describe_payment(got)
    kinds = rs.kinds(c, deal)
    assert _count(kinds, "order.refunded") == 1, kinds
    assert _count(kinds, "stock.restocked") == 0, f"a refund without restock restocked: {kinds}"
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (8, 0), f"stock after an outside refund: {st}"
    status, _, _ = rs.refund(c, "dash-full-1", deal_id=deal, amount=0, restock=True)
    expect_error(status, "FAILED_PRECONDITION", "already_refunded", "after a full dashboard refund")
    assert rs.refund_posts(fake_stripe) == []


# ---------------------------------------------------------------------------
# Full refunds and stock


@pytest.mark.test_timeout(90)
def test_full_refund_with_restock_returns_stock_exactly_once(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = "deal-rf-restock"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 3, 500, set_stock=10)
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (7, 0), f"test setup: stock after the sale {st}"

    s1, ref, p1 = rs.refund(c, "rs-1", deal_id=deal, amount=0, restock=True)
    assert s1.code == pb.OK, h.describe_status(s1)
    assert (ref.amount, ref.status) == (1500, pb.REFUND_STATUS_SUCCEEDED), rs.describe_refund(ref)
    assert (ref.payment.status, ref.payment.amount_refunded) == (pb.PAYMENT_STATUS_REFUNDED, 1500)

    def check(when):
        st = cs.get_stock(c, SKU)
        assert (st.on_hand, st.reserved) == (10, 0), (
            f"{when}: stock {st.on_hand}/{st.reserved}, expected the 3 units back exactly once "
            f"(10/0)")
        kinds = rs.kinds(c, deal)
        for kind in ("stock.restocked", "order.refunded", "payment.refunded"):
            assert _count(kinds, kind) == 1, f"{when}: {_count(kinds, kind)} x {kind}: {kinds}"
        got = rs.payment(c, pay.payment_id)
        assert (got.status, got.amount_refunded, len(got.refunds)) == (
            pb.PAYMENT_STATUS_REFUNDED, 1500, 1), f"{when}: {rs.describe_payment(got)}"

    check("after the full refund")
    # A second refund is impossible.
    for key, amount in (("rs-2", 0), ("rs-3", 1)):
        status, _, _ = rs.refund(c, key, deal_id=deal, amount=amount, restock=True)
        expect_error(status, "FAILED_PRECONDITION", "already_refunded",
                     f"refund of {amount} after a full refund")
    s2, _, p2 = rs.refund(c, "rs-1", deal_id=deal, amount=0, restock=True)
    assert s2.code == pb.OK and p2 == p1, f"same key: {h.describe_status(s2)}"
    check("after refused second refunds and a replay")
    # Stripe's events about it, delivered, redelivered, and a later charge.refunded.
    evs = rs.refund_events(fake_stripe, ref.stripe_refund_id)
    assert {e["type"] for e in evs} == {"refund.created", "charge.refunded"}, [e["type"] for e in evs]
    rs.deliver_events(c, fake_stripe, evs, "the refund's events")
    assert rs.deliver_events(c, fake_stripe, evs, "again") == ["DUPLICATE"] * len(evs)
    charge_body, _ = ws.delivery(fake_stripe, [e for e in evs if e["type"] == "charge.refunded"][0]["id"])
    later = ws.forge(charge_body, "charge.refunded")
    ws.deliver_ok(c, later, ws.sign(later), "a later charge.refunded with a new id")
    check("after charge.refunded deliveries")
    assert len(rs.fake_refunds(fake_stripe)) == 1


@pytest.mark.test_timeout(90)
def test_partial_refund_with_restock_restocks_when_fully_refunded(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = "deal-rf-restock-2"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 2, 500, set_stock=10)
    r1 = rs.refund_ok(c, "rp-1", "partial with restock", deal_id=deal, amount=300, restock=True)
    assert r1.payment.status == pb.PAYMENT_STATUS_PARTIALLY_REFUNDED
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (8, 0), (
        f"a partial refund restocked (stock returns only when the payment is REFUNDED): {st}")
    assert "stock.restocked" not in rs.kinds(c, deal)
    r2 = rs.refund_ok(c, "rp-2", "the rest without restock", deal_id=deal, amount=0)
    assert (r2.amount, r2.payment.status) == (700, pb.PAYMENT_STATUS_REFUNDED), rs.describe_refund(r2)
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (10, 0), (
        f"one of the payment's refunds asked for restock: the 2 units must be back once: {st}")
    kinds = rs.kinds(c, deal)
    assert _count(kinds, "stock.restocked") == 1 and _count(kinds, "order.refunded") == 1, kinds
    rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "restock on the last refund")


# ---------------------------------------------------------------------------
# Late payments go through a refund row too


@pytest.mark.test_timeout(90)
def test_late_payment_refund_is_listed_on_the_payment(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    sku = "rf-late-sku"
    cs.set_stock(c, sku, 1)
    first = ws.open_checkout(c, "deal-rf-late-a", sku, 1, 1000)
    fake_stripe.expire_session_at_stripe(first.checkout_session_id)
    ws.deliver_ok(c, *ws.session_delivery(fake_stripe, first.checkout_session_id, ws.EXPIRED))
    ws.open_checkout(c, "deal-rf-late-b", sku, 1, 1000)  # the last unit goes elsewhere
    fake_stripe.control("POST", f"/_fake/sessions/{first.checkout_session_id}/complete",
                        {"paid": True, "late": True})
    ws.deliver_ok(c, *ws.session_delivery(fake_stripe, first.checkout_session_id, ws.COMPLETED))
    got = rs.payment(c, first.payment_id)
    at_fake = rs.fake_refunds(fake_stripe)
    assert len(at_fake) == 1, f"test setup: late payment refunds at the fake {rs.describe_fake(at_fake)}"
    assert [(r.amount, r.status, r.stripe_refund_id) for r in got.refunds] == [
        (1000, pb.REFUND_STATUS_SUCCEEDED, at_fake[0]["id"])], (
        f"the late payment's automatic refund must be a refund row: {rs.describe_payment(got)}")
    assert rs.REFUND_ID_RE.match(got.refunds[0].refund_id), rs.describe_payment(got)
    assert got.amount_refunded == 1000
    assert got.status == pb.PAYMENT_STATUS_EXPIRED, rs.describe_payment(got)
    status, _, _ = rs.refund(c, "late-1", payment_id=first.payment_id, amount=0)
    expect_error(status, "FAILED_PRECONDITION", "payment_not_paid",
                 "refund of an EXPIRED payment whose late payment was refunded")
    assert len(rs.fake_refunds(fake_stripe)) == 1


# ---------------------------------------------------------------------------
# Where the daemon's and Stripe's views meet


@pytest.mark.test_timeout(90)
def test_events_of_a_refund_whose_answer_was_lost_match_its_row(pay_daemon, fake_stripe, pb):
    """The refund is made at Stripe but every answer is lost (the row stays PENDING without a
    Stripe id); Stripe's refund.created / charge.refunded for it (with the row's refund_id in
    their metadata) arrive before the row is resumed: still one refund, never counted twice."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-lost", SKU, 1, 1000, set_stock=10)
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="apply_then_drop", times=50)
    status, _, _ = rs.refund(c, "lost-1", payment_id=pay.payment_id, amount=600)
    fake_stripe.clear_faults()
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "every answer lost")
    [made] = rs.fake_refunds(fake_stripe)
    row_id = made["metadata"]["refund_id"]

    rs.deliver_events(c, fake_stripe, rs.refund_events(fake_stripe, made["id"]),
                      "the events of a refund whose answer was lost")
    got = rs.payment(c, pay.payment_id)
    live = sum(r.amount for r in got.refunds if r.status != pb.REFUND_STATUS_FAILED)
    assert live == 600 and got.amount_refunded in (0, 600), (
        f"one refund of 600 counted {live} / amount_refunded {got.amount_refunded}: "
        f"{rs.describe_payment(got)}")
    assert [r.refund_id for r in got.refunds] == [row_id], (
        f"the events must be matched to the daemon's row {row_id} (metadata refund_id), not "
        f"recorded as another refund: {rs.describe_payment(got)}")

    rs.reconcile(c)
    got = rs.wait_refunds_settled(d, pay.payment_id, timeout=15)
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "after Reconcile")
    assert [(r.refund_id, r.amount, r.status, r.stripe_refund_id) for r in got.refunds] == [
        (row_id, 600, pb.REFUND_STATUS_SUCCEEDED, made["id"])], rs.describe_payment(got)
    assert len(at_fake) == 1 and got.amount_refunded == 600
    ref = rs.refund_ok(c, "lost-1", "retry", payment_id=pay.payment_id, amount=600)
    assert ref.refund_id == row_id and len(rs.fake_refunds(fake_stripe)) == 1


@pytest.mark.test_timeout(90)
def test_dashboard_refund_not_yet_known_makes_stripe_refuse_then_all_adds_up(pay_daemon,
                                                                             fake_stripe, pb):
    """A dashboard refund whose events have not arrived yet: the daemon asks for all that it
    thinks remains, Stripe refuses (400), the refund is FAILED; then the events arrive and
    what remains is right."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-unknown-dash", SKU, 1, 1000, set_stock=10)
    outside = rs.dashboard_refund(fake_stripe, pay.payment_intent_id, 300)
    ref = rs.refund_ok(c, "ud-1", "refund of all while Stripe already refunded 300",
                       payment_id=pay.payment_id, amount=0)
    assert (ref.status, ref.amount) == (pb.REFUND_STATUS_FAILED, 1000), (
        f"Stripe refused the refund (more than remains at Stripe): {rs.describe_refund(ref)}")
    assert ref.failure_reason, rs.describe_refund(ref)
    rs.deliver_events(c, fake_stripe, rs.refund_events(fake_stripe, outside["id"]), "dashboard")
    status, _, _ = rs.refund(c, "ud-2", payment_id=pay.payment_id, amount=701)
    expect_error(status, "OUT_OF_RANGE", "refund_exceeds_remaining", "701 of 700",
                 remaining="700")
    rest = rs.refund_ok(c, "ud-3", "the rest", payment_id=pay.payment_id, amount=0)
    assert (rest.amount, rest.status) == (700, pb.REFUND_STATUS_SUCCEEDED), rs.describe_refund(rest)
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "all refunded")
    assert [r.status for r in got.refunds] == [pb.REFUND_STATUS_FAILED, pb.REFUND_STATUS_SUCCEEDED,
                                               pb.REFUND_STATUS_SUCCEEDED], rs.describe_payment(got)
    assert (got.status, got.amount_refunded, rs.live_sum(at_fake)) == (
        pb.PAYMENT_STATUS_REFUNDED, 1000, 1000)


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_pending_dashboard_refund_is_resolved_by_its_events(pay_daemon, fake_stripe, pb, outcome):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = f"deal-rf-dash-pend-{outcome}"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 1, 1000, set_stock=10)
    fake_stripe.control("POST", "/_fake/config", {"refund_status": "pending"})
    outside = rs.dashboard_refund(fake_stripe, pay.payment_intent_id, 1000)
    outcomes = rs.deliver_events(c, fake_stripe, rs.refund_events(fake_stripe, outside["id"]),
                                 "pending dashboard refund")
    assert outcomes == ["APPLIED", "APPLIED"], outcomes
    got = rs.payment(c, pay.payment_id)
    assert [(r.amount, r.status, r.stripe_refund_id) for r in got.refunds] == [
        (1000, pb.REFUND_STATUS_PENDING, outside["id"])], rs.describe_payment(got)
    assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PAID, 0), rs.describe_payment(got)
    status, _, _ = rs.refund(c, "dp-1", payment_id=pay.payment_id, amount=1)
    expect_error(status, "OUT_OF_RANGE", "refund_exceeds_remaining",
                 "while a dashboard refund of everything is pending", remaining="0")

    rs.resolve_at_stripe(fake_stripe, outside["id"], outcome, "lost_or_stolen_card")
    rs.deliver_events(c, fake_stripe,
                      rs.refund_events(fake_stripe, outside["id"], ("refund.updated", "refund.failed")),
                      f"dashboard refund {outcome}")
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, f"dashboard {outcome}")
    kinds = rs.kinds(c, deal)
    if outcome == "succeeded":
        assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_REFUNDED, 1000), (
            rs.describe_payment(got))
        assert kinds.count("order.refunded") == 1, kinds
    else:
        assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PAID, 0), (
            rs.describe_payment(got))
        assert [r.status for r in got.refunds] == [pb.REFUND_STATUS_FAILED]
        fake_stripe.control("POST", "/_fake/config", {"refund_status": "succeeded"})
        ok = rs.refund_ok(c, "dp-2", "after the failed dashboard refund",
                          payment_id=pay.payment_id, amount=0)
        assert ok.amount == 1000 and ok.status == pb.REFUND_STATUS_SUCCEEDED, rs.describe_refund(ok)
    assert kinds.count("stock.restocked") == 0, kinds


@pytest.mark.test_timeout(90)
def test_restock_asked_by_a_partial_refund_happens_when_a_dashboard_refund_completes_it(
        pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = "deal-rf-restock-dash"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 2, 500, set_stock=10)
    rs.refund_ok(c, "rd-1", "partial with restock", deal_id=deal, amount=400, restock=True)
    assert cs.get_stock(c, SKU).on_hand == 8, "a partial refund restocked"
    outside = rs.dashboard_refund(fake_stripe, pay.payment_intent_id, None)  # the other 600
    evs = rs.refund_events(fake_stripe, outside["id"])
    rs.deliver_events(c, fake_stripe, evs, "the dashboard refund of the rest")
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "rest at the dashboard")
    assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_REFUNDED, 1000), (
        rs.describe_payment(got))
    st = cs.get_stock(c, SKU)
    kinds = rs.kinds(c, deal)
    assert (st.on_hand, st.reserved) == (10, 0) and kinds.count("stock.restocked") == 1, (
        f"one of the payment's refunds asked for restock: when the payment became REFUNDED "
        f"(through the dashboard) the 2 units must come back once; stock {st}, audit {kinds}")
    rs.deliver_events(c, fake_stripe, evs, "again")
    assert cs.get_stock(c, SKU).on_hand == 10 and rs.kinds(c, deal).count("stock.restocked") == 1


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_pending_full_refund_with_restock_restocks_only_when_it_succeeds(pay_daemon, fake_stripe,
                                                                         pb, outcome):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = f"deal-rf-pend-restock-{outcome}"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 2, 500, set_stock=10)
    fake_stripe.control("POST", "/_fake/config", {"refund_status": "pending"})
    ref = rs.refund_ok(c, "pr-1", "full refund with restock, pending at Stripe", deal_id=deal,
                       amount=0, restock=True)
    assert ref.status == pb.REFUND_STATUS_PENDING, rs.describe_refund(ref)
    assert cs.get_stock(c, SKU).on_hand == 8, "stock returned while the refund is only pending"
    rs.resolve_at_stripe(fake_stripe, ref.stripe_refund_id, outcome, "expired_or_canceled_card")
    [updated] = rs.refund_events(fake_stripe, ref.stripe_refund_id, ("refund.updated",))
    rs.deliver_events(c, fake_stripe, [updated], f"refund.updated {outcome}")
    rs.deliver_events(c, fake_stripe, [updated], "again")
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, outcome)
    st = cs.get_stock(c, SKU)
    kinds = rs.kinds(c, deal)
    if outcome == "succeeded":
        assert got.status == pb.PAYMENT_STATUS_REFUNDED, rs.describe_payment(got)
        assert st.on_hand == 10 and kinds.count("stock.restocked") == 1, (
            f"stock {st}, audit {kinds}")
    else:
        assert got.status == pb.PAYMENT_STATUS_PAID, rs.describe_payment(got)
        assert st.on_hand == 8 and kinds.count("stock.restocked") == 0, (
            f"a failed refund restocked: stock {st}, audit {kinds}")


@pytest.mark.test_timeout(90)
def test_refund_by_deal_refunds_its_paid_payment(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = "deal-rf-bydeal"
    cs.set_stock(c, SKU, 10)
    first = ws.open_checkout(c, deal, SKU, 1, 700)
    status, _ = ws.cancel(c, deal, reason="changed the cart")
    assert status.code == pb.OK, h.describe_status(status)
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 2, 500)
    assert pay.payment_id != first.payment_id
    ref = rs.refund_ok(c, "bd-1", "by deal", deal_id=deal, amount=0)
    assert (ref.payment_id, ref.amount) == (pay.payment_id, 1000), (
        f"refund by deal must refund the deal's paid payment {pay.payment_id}: "
        f"{rs.describe_refund(ref)}")
    assert rs.payment(c, first.payment_id).refunds == []
    status, _, _ = rs.refund(c, "bd-2", deal_id=deal, amount=0)
    expect_error(status, "FAILED_PRECONDITION", "already_refunded", "by deal, refunded")


@pytest.mark.test_timeout(120)
def test_retries_and_reconcile_racing_on_a_pending_row_make_one_refund(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        pay = rs.paid_payment(c, fake_stripe, "deal-rf-race", SKU, 1, 1000, set_stock=10)
        fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="status", status=503, times=50)
        status, _, _ = rs.refund(c, "race-1", payment_id=pay.payment_id, amount=500)
        fake_stripe.clear_faults()
        expect_error(status, "UNAVAILABLE", "stripe_unavailable", "503s")
        [row] = rs.payment(c, pay.payment_id).refunds
    # Slow Stripe so that the resumptions overlap there.
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="delay", ms=300, times=10)

    def one(i):
        with h.Client(d.socket_path, timeout=60) as cl:
            if i % 2:
                return cl.call("Reconcile", pb.ReconcileRequest(), timeout=60)[0], None
            status, ref, _ = rs.refund(cl, "race-1", payment_id=pay.payment_id, amount=500,
                                       timeout=60)
            return status, ref

    results = cs.run_concurrently(6, one, timeout=90)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"a call raised {errors[0]!r}"
    bad = [h.describe_status(s) for s, _ in results if s.code != pb.OK]
    assert not bad, f"retries and Reconcile racing: {bad}"
    ids = {ref.refund_id for _, ref in results if ref is not None}
    assert ids == {row.refund_id}, f"the retries answered rows {ids}, the pending row is {row.refund_id}"
    got = rs.wait_refunds_settled(d, pay.payment_id, timeout=15)
    with d.client(timeout=30) as c:
        got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "after the race")
    assert len(at_fake) == 1 and [(r.refund_id, r.status) for r in got.refunds] == [
        (row.refund_id, pb.REFUND_STATUS_SUCCEEDED)], (
        f"{rs.describe_payment(got)} / {rs.describe_fake(at_fake)}")
    rs.assert_one_key_per_row(fake_stripe, "race")


@pytest.mark.test_timeout(120)
def test_concurrent_refunds_and_dashboard_events_agree_with_stripe(pay_daemon, fake_stripe, pb):
    """Refunds through the daemon race with a dashboard refund the daemon learns of only by
    its events, delivered at the same time: Stripe refuses what would exceed the payment
    (those refunds are FAILED), and in the end the daemon and Stripe agree."""
    d = pay_daemon(env=QUIET)
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        pay = rs.paid_payment(c, fake_stripe, "deal-rf-racedash", SKU, 1, 1000, set_stock=10)
    outside = rs.dashboard_refund(fake_stripe, pay.payment_intent_id, 350)
    evs = rs.refund_events(fake_stripe, outside["id"])
    deliveries = [ws.delivery(fake_stripe, e["id"]) for e in evs]
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="delay", ms=50, times=12)

    def one(i):
        with h.Client(d.socket_path, timeout=60) as cl:
            if i < len(deliveries):
                return "event", ws.deliver(cl, *deliveries[i], timeout=60)[0]
            status, ref, _ = rs.refund(cl, f"rdash-{i}", payment_id=pay.payment_id, amount=100,
                                       timeout=60)
            return "refund", status

    results = cs.run_concurrently(12, one, timeout=90)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"a call raised {errors[0]!r}"
    bad = [(what, h.describe_status(s)) for what, s in results
           if s.code != pb.OK and (s.code, s.reason) not in (
               (pb.OUT_OF_RANGE, "refund_exceeds_remaining"),
               (pb.FAILED_PRECONDITION, "already_refunded"))]
    assert not bad, f"unexpected answers: {bad}"
    with d.client(timeout=30) as c:
        got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id,
                                                    "refunds racing a dashboard refund")
        assert outside["id"] in {r.stripe_refund_id for r in got.refunds}, rs.describe_payment(got)
        assert rs.live_sum(at_fake) <= 1000
        # Everything that remains refunds exactly.
        rest_status, rest, _ = rs.refund(c, "rdash-rest", payment_id=pay.payment_id, amount=0)
        if got.status == pb.PAYMENT_STATUS_REFUNDED:
            expect_error(rest_status, "FAILED_PRECONDITION", "already_refunded", "nothing left")
        else:
            assert rest_status.code == pb.OK and rest.status == pb.REFUND_STATUS_SUCCEEDED, (
                f"the rest: {h.describe_status(rest_status)} "
                f"{rest and rs.describe_refund(rest)}; before: {rs.describe_payment(got)}")
        final, fin_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "final")
        assert (final.status, final.amount_refunded, rs.live_sum(fin_fake)) == (
            pb.PAYMENT_STATUS_REFUNDED, 1000, 1000), rs.describe_payment(final)


@pytest.mark.test_timeout(120)
@pytest.mark.parametrize("made_at_stripe", [True, False], ids=["made", "not_made"])
def test_a_row_older_than_stripes_key_window_is_looked_up_before_it_is_sent(
        make_daemon, fake_stripe, pb, made_at_stripe):
    """behaviour.md, "Stripe calls": Stripe forgets idempotency keys after 24 h, so a refund
    step older than that is not blindly re-sent; the refund is first looked up among the
    payment's refunds by the refund_id in its metadata.

    24 hours pass by ageing the PENDING row in the stopped daemon's database (white-box: the
    refunds table's created_at/updated_at) and moving the fake's clock, which makes the fake
    forget the key: a blind re-send would make a second refund."""
    d = make_daemon(env={"STRIPE_API_BASE": fake_stripe.url, **QUIET})
    d.start()
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        pay = rs.paid_payment(c, fake_stripe, "deal-rf-window", SKU, 1, 1000, set_stock=10)
        kind = "apply_then_drop" if made_at_stripe else "drop"
        fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind=kind, times=50)
        status, _, _ = rs.refund(c, "win-1", payment_id=pay.payment_id, amount=600)
        fake_stripe.clear_faults()
        expect_error(status, "UNAVAILABLE", "stripe_unavailable", f"every POST {kind}")
        [row] = rs.payment(c, pay.payment_id).refunds
        assert row.status == pb.REFUND_STATUS_PENDING
    assert len(rs.fake_refunds(fake_stripe)) == (1 if made_at_stripe else 0), "test setup"
    assert d.stop(signal.SIGTERM) == 0

    day = 25 * 3600
    n = d.db_execute("UPDATE refunds SET created_at = created_at - ?, updated_at = updated_at - ? "
                     "WHERE refund_id = ?", day, day, row.refund_id)
    assert n == 1, f"test setup: could not age refund row {row.refund_id} in {d.db_path}"
    fake_stripe.control("POST", "/_fake/clock", {"advance_seconds": day})

    d.start()
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        rs.reconcile(c)
    got = rs.wait_refunds_settled(d, pay.payment_id, timeout=20)
    at_fake = rs.fake_refunds(fake_stripe, pay.payment_intent_id)
    ctx = (f"a {'made' if made_at_stripe else 'never made'} refund resumed after Stripe's key "
           f"window: daemon {rs.describe_payment(got)}; fake {rs.describe_fake(at_fake)}")
    assert len(at_fake) == 1, f"expected exactly one refund at Stripe: {ctx}"
    assert [(r.refund_id, r.status, r.stripe_refund_id) for r in got.refunds] == [
        (row.refund_id, pb.REFUND_STATUS_SUCCEEDED, at_fake[0]["id"])], ctx
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, ctx)


@pytest.mark.test_timeout(90)
def test_late_snapshots_do_not_move_a_settled_refund_back(pay_daemon, fake_stripe, pb):
    """refund.created / charge.refunded carry the refund as it was (pending); delivered after
    refund.updated settled it, they change nothing (states only move forward)."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-snap", SKU, 1, 1000, set_stock=10)
    fake_stripe.control("POST", "/_fake/config", {"refund_status": "pending"})
    ref = rs.refund_ok(c, "snap-1", "pending at Stripe", payment_id=pay.payment_id, amount=400)
    rs.resolve_at_stripe(fake_stripe, ref.stripe_refund_id, "succeeded")
    rs.deliver_events(c, fake_stripe, rs.refund_events(fake_stripe, ref.stripe_refund_id,
                                                       ("refund.updated",)), "refund.updated")
    old = rs.refund_events(fake_stripe, ref.stripe_refund_id)
    assert {e["data"]["object"].get("status") for e in old if e["type"] == "refund.created"} == {
        "pending"}, "test setup: refund.created should show the refund pending"
    rs.deliver_events(c, fake_stripe, old, "late pending snapshots")
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "after late snapshots")
    assert [(r.status, r.amount) for r in got.refunds] == [(pb.REFUND_STATUS_SUCCEEDED, 400)], (
        f"a late snapshot moved the refund: {rs.describe_payment(got)}")
    assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 400)


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_outside_refund_events_out_of_order(pay_daemon, fake_stripe, pb, outcome):
    """A dashboard refund that Stripe settles before any of its events is delivered: the
    daemon first hears refund.updated (settled), then the older refund.created and
    charge.refunded (pending): one refund, settled as Stripe says."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    deal = f"deal-rf-ooo-{outcome}"
    pay = rs.paid_payment(c, fake_stripe, deal, SKU, 1, 1000, set_stock=10)
    fake_stripe.control("POST", "/_fake/config", {"refund_status": "pending"})
    outside = rs.dashboard_refund(fake_stripe, pay.payment_intent_id, 500)
    rs.resolve_at_stripe(fake_stripe, outside["id"], outcome, "lost_or_stolen_card")
    fake_stripe.control("POST", "/_fake/config", {"refund_status": "succeeded"})
    evs = rs.refund_events(fake_stripe, outside["id"],
                           ("refund.created", "charge.refunded", "refund.updated", "refund.failed"))
    late_first = sorted(evs, key=lambda e: e["type"] not in ("refund.updated", "refund.failed"))
    rs.deliver_events(c, fake_stripe, late_first, "out of order")
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, f"out of order, {outcome}")
    want = pb.REFUND_STATUS_SUCCEEDED if outcome == "succeeded" else pb.REFUND_STATUS_FAILED
    assert [(r.stripe_refund_id, r.status) for r in got.refunds] == [(outside["id"], want)], (
        f"events {[e['type'] for e in late_first]}: {rs.describe_payment(got)}")
    remaining = 500 if outcome == "succeeded" else 1000
    status, _, _ = rs.refund(c, "ooo-1", payment_id=pay.payment_id, amount=remaining + 1)
    expect_error(status, "OUT_OF_RANGE", "refund_exceeds_remaining", "one more than remains",
                 remaining=str(remaining))
    rest = rs.refund_ok(c, "ooo-2", "the rest", payment_id=pay.payment_id, amount=0)
    assert (rest.amount, rest.status) == (remaining, pb.REFUND_STATUS_SUCCEEDED), (
        rs.describe_refund(rest))
    final, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "final")
    assert (final.status, final.amount_refunded, rs.live_sum(at_fake)) == (
        pb.PAYMENT_STATUS_REFUNDED, 1000, 1000), rs.describe_payment(final)


@pytest.mark.test_timeout(90)
def test_a_deadline_that_passes_during_the_stripe_call_is_resumed_once(pay_daemon, fake_stripe, pb):
    """Guarantee 3 for refunds: a timeout between the row and Stripe's answer is resumed with
    the same Stripe key; the refund Stripe made while nobody waited is the one recorded."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    pay = rs.paid_payment(c, fake_stripe, "deal-rf-deadline", SKU, 1, 1000, set_stock=10)
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="delay", ms=4000, times=1)
    status, _, _ = rs.refund(c, "dl-1", payment_id=pay.payment_id, amount=700, timeout_ms=1500)
    assert status.code in (pb.DEADLINE_EXCEEDED, pb.UNAVAILABLE), (
        f"a call whose deadline passes while Stripe is slow: {h.describe_status(status)}")
    time.sleep(3.5)  # the slow Stripe request completes
    assert len(rs.fake_refunds(fake_stripe)) == 1, "test setup: the slow request made no refund"
    rs.reconcile(c)
    got = rs.wait_refunds_settled(d, pay.payment_id, timeout=15)
    got, at_fake = rs.assert_agrees_with_stripe(c, fake_stripe, pay.payment_id, "after Reconcile")
    assert len(at_fake) == 1 and [(r.amount, r.status) for r in got.refunds] == [
        (700, pb.REFUND_STATUS_SUCCEEDED)], (
        f"{rs.describe_payment(got)} / {rs.describe_fake(at_fake)}")
    ref = rs.refund_ok(c, "dl-1", "retry", payment_id=pay.payment_id, amount=700)
    assert ref.refund_id == got.refunds[0].refund_id and len(rs.fake_refunds(fake_stripe)) == 1
    rs.assert_one_key_per_row(fake_stripe, "deadline")
