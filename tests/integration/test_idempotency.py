"""Request idempotency (protocol.md section 5) on CreateCheckout, SetStock and AdjustStock.

Same key + same method + same payload: the stored response, byte for byte,
and nothing done again (even after a restart). Same key with another payload
or method: INVALID_ARGUMENT idempotency_key_reused. A second call while the
first is in flight waits for it and gets its response. Keys are per caller
uid; the tests run as root only.
"""

from __future__ import annotations

import signal

import pytest

import checkout_support as cs
import paymentsd_harness as h
from checkout_support import checkout_request, create_ok, expect_error, item

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores


def _adjust(pb, sku, delta):
    return pb.StockAdjustment(sku=sku, delta=delta)


def test_adjust_stock_replayed_not_reapplied(pay_daemon, pb):
    d = pay_daemon()
    c = d.client()
    cs.set_stock(c, "widget", 10)
    s1, p1 = c.call("AdjustStock", _adjust(pb, "widget", 5), idempotency_key="adj-1")
    assert s1.code == pb.OK, h.describe_status(s1)
    assert pb.Stock.FromString(p1).on_hand == 15
    for i in range(3):
        s2, p2 = c.call("AdjustStock", _adjust(pb, "widget", 5), idempotency_key="adj-1")
        assert s2.code == pb.OK, f"replay {i}: {h.describe_status(s2)}"
        assert p2 == p1, f"replay {i}: payload differs from the first response"
    assert cs.get_stock(c, "widget").on_hand == 15, "the replayed AdjustStock was applied again"
    # Another key is another adjustment.
    s3, p3 = c.call("AdjustStock", _adjust(pb, "widget", 5), idempotency_key="adj-2")
    assert s3.code == pb.OK and pb.Stock.FromString(p3).on_hand == 20
    # No key: applied every time.
    cs.call_ok(c, "AdjustStock", _adjust(pb, "widget", 1))
    cs.call_ok(c, "AdjustStock", _adjust(pb, "widget", 1))
    assert cs.get_stock(c, "widget").on_hand == 22


def test_set_stock_replay_returns_stored_response(pay_daemon, pb):
    d = pay_daemon()
    c = d.client()
    s1, p1 = c.call("SetStock", pb.StockUpdate(sku="bolt", on_hand=5), idempotency_key="set-1")
    assert s1.code == pb.OK, h.describe_status(s1)
    cs.set_stock(c, "bolt", 9)  # no key: a later change by someone else
    s2, p2 = c.call("SetStock", pb.StockUpdate(sku="bolt", on_hand=5), idempotency_key="set-1")
    assert s2.code == pb.OK, h.describe_status(s2)
    assert p2 == p1, (f"replay must return the stored response {pb.Stock.FromString(p1)}, "
                      f"got {pb.Stock.FromString(p2)}")
    assert cs.get_stock(c, "bolt").on_hand == 9, "the replayed SetStock was executed again"


def test_key_reused_with_other_payload_or_method(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    cs.set_stock(c, "nut", 10)
    ok, _ = c.call("AdjustStock", _adjust(pb, "nut", 2), idempotency_key="k-reuse")
    assert ok.code == pb.OK, h.describe_status(ok)
    cases = [
        ("AdjustStock, other delta", "AdjustStock", _adjust(pb, "nut", 3)),
        ("AdjustStock, other sku", "AdjustStock", _adjust(pb, "bolt", 2)),
        ("SetStock, same key", "SetStock", pb.StockUpdate(sku="nut", on_hand=2)),
        ("CreateCheckout, same key", "CreateCheckout", checkout_request("deal-reuse")),
    ]
    for label, method, msg in cases:
        status, _ = c.call(method, msg, idempotency_key="k-reuse")
        expect_error(status, "INVALID_ARGUMENT", "idempotency_key_reused", label)
    assert cs.get_stock(c, "nut").on_hand == 12, "a refused reuse changed the stock"
    assert fake_stripe.call_counts() == {}, "a refused reuse reached Stripe"
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="deal-reuse"))
    expect_error(status, "NOT_FOUND", "deal_not_found", "a refused reuse made a payment")

    # A CreateCheckout key: another payload (other deal, other items) is refused too.
    first_s, first_p = c.call("CreateCheckout", checkout_request("deal-ck", [item("a", 1, 100)]),
                              idempotency_key="ck-1")
    assert first_s.code == pb.OK, h.describe_status(first_s)
    for label, req in (("other items", checkout_request("deal-ck", [item("a", 2, 100)])),
                       ("other deal", checkout_request("deal-ck-2", [item("a", 1, 100)])),
                       ("on_open REPLACE", checkout_request("deal-ck", [item("a", 1, 100)],
                                                            on_open=pb.ON_OPEN_REPLACE))):
        status, _ = c.call("CreateCheckout", req, idempotency_key="ck-1")
        expect_error(status, "INVALID_ARGUMENT", "idempotency_key_reused", f"CreateCheckout, {label}")
    assert fake_stripe.counters()["sessions_created"] == 1


def test_bad_idempotency_keys_are_refused(pay_daemon, pb):
    d = pay_daemon()
    c = d.client()
    cs.set_stock(c, "k", 1)
    for label, key in (("256 chars", "k" * 256), ("control char", "ab\x01cd"),
                       ("non-ASCII", "cl\u00e9")):
        status, _ = c.call("AdjustStock", _adjust(pb, "k", 1), idempotency_key=key)
        assert status.code == pb.INVALID_ARGUMENT, (
            f"idempotency key {label}: expected INVALID_ARGUMENT, got {h.describe_status(status)}")
    assert cs.get_stock(c, "k").on_hand == 1, "a call with a bad key was applied"
    status, _ = c.call("AdjustStock", _adjust(pb, "k", 1), idempotency_key="k" * 255)
    assert status.code == pb.OK, f"a 255-char key must be accepted: {h.describe_status(status)}"


def test_create_checkout_replay_is_byte_identical(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    req = checkout_request("deal-idem", [item("a", 1, 990)])
    s1, p1 = c.call("CreateCheckout", req, idempotency_key="co-1")
    assert s1.code == pb.OK, h.describe_status(s1)
    assert pb.Payment.FromString(p1).created is True
    s2, p2 = c.call("CreateCheckout", req, idempotency_key="co-1")
    assert s2.code == pb.OK, h.describe_status(s2)
    assert p2 == p1, (f"replay differs: first {pb.Payment.FromString(p1)}, "
                      f"replay {pb.Payment.FromString(p2)}")
    # Without the key, the deal rule answers: same payment, created=false.
    again = create_ok(c, req)
    assert again.payment_id == pb.Payment.FromString(p1).payment_id and again.created is False
    assert fake_stripe.counters()["sessions_created"] == 1
    assert fake_stripe.request_count() == 1


@pytest.mark.test_timeout(90)
def test_adjust_stock_key_survives_restart(make_daemon, fake_stripe, pb):
    d = make_daemon(env={"STRIPE_API_BASE": fake_stripe.url})
    d.start()
    with d.client() as c:
        cs.set_stock(c, "gear", 1)
        s1, p1 = c.call("AdjustStock", _adjust(pb, "gear", 4), idempotency_key="restart-1")
        assert s1.code == pb.OK, h.describe_status(s1)
        k1, q1 = c.call("CreateCheckout", checkout_request("deal-rs"), idempotency_key="restart-co")
        assert k1.code == pb.OK, h.describe_status(k1)
    rc = d.stop(signal.SIGTERM)
    assert rc == 0, f"SIGTERM stop exited {rc}"
    d.start()  # same PAYMENTSD_DB and socket
    with d.client() as c:
        s2, p2 = c.call("AdjustStock", _adjust(pb, "gear", 4), idempotency_key="restart-1")
        assert s2.code == pb.OK, f"after restart: {h.describe_status(s2)}"
        assert p2 == p1, "after a restart the replay is not the stored response"
        assert cs.get_stock(c, "gear").on_hand == 5, "AdjustStock applied again after a restart"
        status, _ = c.call("AdjustStock", _adjust(pb, "gear", 9), idempotency_key="restart-1")
        expect_error(status, "INVALID_ARGUMENT", "idempotency_key_reused", "after restart")
        k2, q2 = c.call("CreateCheckout", checkout_request("deal-rs"), idempotency_key="restart-co")
        assert k2.code == pb.OK and q2 == q1, "CreateCheckout replay after restart differs"
    assert fake_stripe.counters()["sessions_created"] == 1


@pytest.mark.test_timeout(60)
def test_concurrent_calls_with_one_key_run_once(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env={"PAYMENTSD_TEST_DELAY_MS": "500"})
    with d.client(timeout=20) as c:
        cs.set_stock(c, "cog", 10)

    def adjust(i):
        with h.Client(d.socket_path, timeout=20) as cl:
            return cl.call("AdjustStock", _adjust(pb, "cog", 3), idempotency_key="conc-adj",
                           timeout_ms=15000, timeout=20)

    results = cs.run_concurrently(4, adjust, timeout=30)
    cs.all_answered_ok(results, "concurrent calls with one key")
    assert len({p for _, p in results}) == 1, "concurrent calls with one key got different answers"
    with d.client(timeout=20) as c:
        assert cs.get_stock(c, "cog").on_hand == 13, (
            f"AdjustStock +3 with one key, 4 concurrent calls: on_hand "
            f"{cs.get_stock(c, 'cog').on_hand}, expected 13")

    req = checkout_request("deal-conc", [item("x", 1, 100)])

    def create(i):
        with h.Client(d.socket_path, timeout=20) as cl:
            return cl.call("CreateCheckout", req, idempotency_key="conc-co",
                           timeout_ms=15000, timeout=20)

    results = cs.run_concurrently(4, create, timeout=30)
    cs.all_answered_ok(results, "concurrent CreateCheckout with one key")
    payloads = {p for _, p in results}
    assert len(payloads) == 1, "concurrent CreateCheckout with one key got different answers"
    assert pb.Payment.FromString(payloads.pop()).created is True, (
        "every caller of one key gets the first call's response, which opened the checkout")
    assert fake_stripe.counters()["sessions_created"] == 1
