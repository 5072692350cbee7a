"""CreateCheckout when Stripe misbehaves: retries with one Idempotency-Key, 4xx, 5xx, breaker.

Faults are scripted at the fake (`POST /_fake/faults`) on the route
`POST /v1/checkout/sessions`. The janitor is slowed down
(PAYMENTSD_JANITOR_INTERVAL=3600) so that only the calls under test reach
the fake and its request counts are exact.
"""

from __future__ import annotations

import time

import pytest

import checkout_support as cs
import paymentsd_harness as h
from checkout_support import checkout_request, create_ok, expect_error, item

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

ROUTE = cs.SESSIONS_ROUTE
QUIET_JANITOR = {"PAYMENTSD_JANITOR_INTERVAL": "3600"}
CALL_TIMEOUT = 45.0  # seconds the test waits for a call that retries with backoff


def _posts(fake):
    return fake.requests(ROUTE)


def _assert_one_key(posts, what):
    keys = cs.keys_of(posts)
    assert keys and all(keys), f"{what}: a session POST without Idempotency-Key: {keys}"
    assert len(set(keys)) == 1, (
        f"{what}: the retries must carry the same Idempotency-Key, the fake saw {keys}")


@pytest.mark.parametrize("status", [500, 503, 429, 409])
def test_transient_errors_then_success(pay_daemon, fake_stripe, pb, status):
    d = pay_daemon(env=QUIET_JANITOR)
    c = d.client(timeout=CALL_TIMEOUT)
    times = 1 if status in (429, 409) else 2
    fake_stripe.add_fault(kind="status", status=status, times=times)
    pay = create_ok(c, checkout_request("deal-5xx", [item("a", 1, 700)]), f"after {times}x {status}")
    assert pay.status == pb.PAYMENT_STATUS_CREATED and pay.created
    posts = _posts(fake_stripe)
    assert [p["status"] for p in posts] == [status] * times + [200], (
        f"expected {times} x {status} then 200, the fake saw {[p['status'] for p in posts]}")
    _assert_one_key(posts, f"{status} x{times} then success")
    assert fake_stripe.counters()["sessions_created"] == 1
    assert [s["id"] for s in fake_stripe.sessions()] == [pay.checkout_session_id]
    assert cs.health(c).pending_operations == 0


def test_network_drop_before_applying_is_retried(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET_JANITOR)
    c = d.client(timeout=CALL_TIMEOUT)
    fake_stripe.add_fault(kind="drop", times=1)
    pay = create_ok(c, checkout_request("deal-drop"))
    posts = _posts(fake_stripe)
    assert len(posts) == 2 and posts[0]["dropped"], f"expected a dropped POST then a retry: {posts}"
    _assert_one_key(posts, "drop then retry")
    assert [s["id"] for s in fake_stripe.sessions()] == [pay.checkout_session_id]


def test_apply_then_drop_retry_gets_the_same_session(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET_JANITOR)
    c = d.client(timeout=CALL_TIMEOUT)
    fake_stripe.add_fault(kind="apply_then_drop", times=1)
    pay = create_ok(c, checkout_request("deal-atd", [item("a", 2, 350)]))
    assert pay.status == pb.PAYMENT_STATUS_CREATED
    posts = _posts(fake_stripe)
    assert len(posts) >= 2 and posts[0]["dropped"], (
        f"expected the first POST dropped after applying, then a retry: "
        f"{[(p['status'], p['dropped']) for p in posts]}")
    _assert_one_key(posts, "apply_then_drop")
    assert posts[-1]["replayed"], "the retry was not answered from Stripe's idempotency store"
    counters = fake_stripe.counters()
    assert counters["sessions_created"] == 1, (
        f"{counters['sessions_created']} sessions: the retry made a second one")
    assert fake_stripe.sessions()[0]["id"] == pay.checkout_session_id


@pytest.mark.parametrize("with_code", [True, False], ids=["with_code", "without_code"])
def test_stripe_400_fails_the_payment_and_releases_stock(pay_daemon, fake_stripe, pb, with_code):
    d = pay_daemon(env=QUIET_JANITOR)
    c = d.client(timeout=CALL_TIMEOUT)
    cs.set_stock(c, "tee", 5)
    fault = {"kind": "status", "status": 400, "times": 1}
    if with_code:
        fault["error"] = {"type": "invalid_request_error", "code": "parameter_invalid_integer",
                          "message": "Invalid integer: abc", "param": "line_items[0][quantity]"}
    fake_stripe.add_fault(**fault)
    req = checkout_request("deal-400", [item("tee", 2, 1200)])
    status, _ = c.call("CreateCheckout", req)
    if with_code:
        expect_error(status, "FAILED_PRECONDITION", "stripe_rejected", "Stripe answered 400",
                     stripe_code="parameter_invalid_integer")
    else:
        expect_error(status, "FAILED_PRECONDITION", "stripe_rejected", "Stripe answered 400")
    assert len(_posts(fake_stripe)) == 1, (
        f"a 4xx must not be retried; the fake saw {len(_posts(fake_stripe))} POSTs")

    pay = cs.get_payment(c, deal_id="deal-400")
    assert pay.status == pb.PAYMENT_STATUS_FAILED, (
        f"payment after a Stripe 400 is {cs.status_name(pay.status)}, expected FAILED")
    assert pay.failure_reason, "a FAILED payment must say why (failure_reason)"
    assert not pay.checkout_session_id
    st = cs.get_stock(c, "tee")
    assert (st.on_hand, st.reserved, st.available) == (5, 0, 5), (
        f"the failed payment's reservation was not released: {st}")
    events = cs.list_events(c, "deal-400")
    assert any(e.to_status == "FAILED" for e in events), (
        f"no audit event to FAILED: {[(e.from_status, e.to_status) for e in events]}")
    assert cs.health(c).pending_operations == 0, "a rejected operation is finished, not pending"

    # The deal is free again: a new attempt opens a new payment.
    again = create_ok(c, req, "after the rejected attempt")
    assert again.created and again.payment_id != pay.payment_id
    assert cs.get_stock(c, "tee").reserved == 2
    listed = cs.list_payments(c, "deal-400")
    assert [(p.payment_id, p.status) for p in listed] == [
        (pay.payment_id, pb.PAYMENT_STATUS_FAILED), (again.payment_id, pb.PAYMENT_STATUS_CREATED)]


@pytest.mark.test_timeout(120)
def test_persistent_5xx_leaves_a_resumable_operation(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET_JANITOR)
    c = d.client(timeout=CALL_TIMEOUT)
    cs.set_stock(c, "cap", 4)
    fake_stripe.add_fault(kind="status", status=500, times=20)
    req = checkout_request("deal-down", [item("cap", 1, 2000)])
    status, _ = c.call("CreateCheckout", req)
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "Stripe answers 500 every time")
    posts = _posts(fake_stripe)
    assert len(posts) == 3, f"expected 3 attempts for one call, the fake saw {len(posts)}"
    _assert_one_key(posts, "attempts of one call")
    first_key = posts[0]["idempotency_key"]

    pay = cs.get_payment(c, deal_id="deal-down")
    assert pay.status == pb.PAYMENT_STATUS_CREATED, (
        f"outcome unknown: the payment must stay CREATED, it is {cs.status_name(pay.status)}")
    assert not pay.checkout_session_id, "no session was made, yet the payment names one"
    assert cs.health(c).pending_operations >= 1, "the unfinished checkout is not pending"
    assert cs.get_stock(c, "cap").reserved == 1, "the open payment's reservation must be held"

    fake_stripe.clear_faults()
    done = create_ok(c, req, "the same request once Stripe is back")
    assert done.payment_id == pay.payment_id, (
        f"the retry opened another payment ({done.payment_id}) instead of finishing {pay.payment_id}")
    assert done.status == pb.PAYMENT_STATUS_CREATED and done.checkout_session_id
    posts = _posts(fake_stripe)
    assert posts[-1]["status"] == 200
    assert posts[-1]["idempotency_key"] == first_key, (
        f"resumed with a new Idempotency-Key {posts[-1]['idempotency_key']!r}, "
        f"first was {first_key!r}")
    assert [s["id"] for s in fake_stripe.sessions()] == [done.checkout_session_id]
    assert cs.health(c).pending_operations == 0
    assert cs.get_stock(c, "cap").reserved == 1
    assert len(cs.list_payments(c, "deal-down")) == 1


@pytest.mark.test_timeout(150)
def test_circuit_breaker_opens_and_recovers(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET_JANITOR)
    c = d.client(timeout=CALL_TIMEOUT)
    fake_stripe.add_fault(kind="status", status=500, times=1000)

    last_growth = time.monotonic()
    seen = 0
    for i in range(5):
        status, _ = c.call("CreateCheckout", checkout_request(f"deal-cb-{i}"))
        expect_error(status, "UNAVAILABLE", "stripe_unavailable", f"failing call {i}")
        n = fake_stripe.request_count()
        if n != seen:
            seen, last_growth = n, time.monotonic()
    assert seen >= 5, f"only {seen} requests reached the fake in 5 failing calls"

    # Open: fails fast, nothing reaches Stripe.
    t0 = time.monotonic()
    status, _ = c.call("CreateCheckout", checkout_request("deal-cb-5"))
    elapsed = time.monotonic() - t0
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "breaker open")
    assert fake_stripe.request_count() == seen, (
        f"with the breaker open a call still reached the fake "
        f"({fake_stripe.request_count()} requests, was {seen})")
    assert elapsed < 1.5, f"an open breaker must fail fast; the call took {elapsed:.2f} s"

    # Stripe recovers, but the cool-down (5 s) has not passed: still fast failures.
    fake_stripe.clear_faults()
    if time.monotonic() - last_growth < 3.5:
        status, _ = c.call("CreateCheckout", checkout_request("deal-cb-6"))
        expect_error(status, "UNAVAILABLE", "stripe_unavailable", "within the cool-down")
        assert fake_stripe.request_count() == seen, "a call went through during the cool-down"

    # After the cool-down one probe goes through, and calls succeed again.
    time.sleep(max(0.0, last_growth + 5.5 - time.monotonic()))
    pay = create_ok(c, checkout_request("deal-cb-7"), "first call after the cool-down")
    assert pay.checkout_session_id
    assert fake_stripe.request_count() == seen + 1, (
        f"expected exactly one probe request, the fake saw {fake_stripe.request_count() - seen}")
    pay8 = create_ok(c, checkout_request("deal-cb-8"), "second call after the cool-down")
    assert pay8.checkout_session_id
    # The deals that failed while Stripe was down can be finished now.
    pay0 = create_ok(c, checkout_request("deal-cb-0"), "finishing a deal that failed")
    assert pay0.checkout_session_id and pay0.status == pb.PAYMENT_STATUS_CREATED
    open_ids = {s["id"] for s in fake_stripe.sessions() if s["status"] == "open"}
    assert {pay.checkout_session_id, pay8.checkout_session_id, pay0.checkout_session_id} <= open_ids


def test_stripe_should_retry_false_is_honoured(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET_JANITOR)
    c = d.client(timeout=CALL_TIMEOUT)
    fake_stripe.add_fault(kind="status", status=500, times=5,
                          headers={"Stripe-Should-Retry": "false"})
    status, _ = c.call("CreateCheckout", checkout_request("deal-nsr"))
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "500 with Stripe-Should-Retry: false")
    assert len(_posts(fake_stripe)) == 1, (
        f"Stripe-Should-Retry: false, yet the daemon sent {len(_posts(fake_stripe))} POSTs")


def test_unknown_outcome_resumed_gets_the_session_stripe_made(pay_daemon, fake_stripe, pb):
    """Stripe made the session, every answer was lost: the retry (same key) gets it back."""
    d = pay_daemon(env=QUIET_JANITOR)
    c = d.client(timeout=CALL_TIMEOUT)
    fake_stripe.add_fault(kind="apply_then_drop", times=1)
    fake_stripe.add_fault(kind="drop", times=10)
    req = checkout_request("deal-lost", [item("a", 1, 100)])
    status, _ = c.call("CreateCheckout", req)
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "every answer lost")
    made = fake_stripe.sessions()
    assert len(made) == 1, "test setup: Stripe should have made one session"
    fake_stripe.clear_faults()
    pay = create_ok(c, req, "retry after the answers were lost")
    assert pay.checkout_session_id == made[0]["id"], (
        f"the payment names {pay.checkout_session_id}, Stripe made {made[0]['id']}")
    assert fake_stripe.counters()["sessions_created"] == 1
    _assert_one_key(_posts(fake_stripe), "lost answers, then the retry")


def test_retry_with_the_same_request_key_after_stripe_unavailable(pay_daemon, fake_stripe, pb):
    """stripe_unavailable is "safe to retry with the same key": it must not be stored as
    the key's final answer."""
    d = pay_daemon(env=QUIET_JANITOR)
    c = d.client(timeout=CALL_TIMEOUT)
    fake_stripe.add_fault(kind="status", status=502, times=20)
    req = checkout_request("deal-key-retry")
    status, _ = c.call("CreateCheckout", req, idempotency_key="retry-me")
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "first attempt")
    fake_stripe.clear_faults()
    s2, p2 = c.call("CreateCheckout", req, idempotency_key="retry-me")
    assert s2.code == pb.OK, f"retry with the same key: {h.describe_status(s2)}"
    pay = pb.Payment.FromString(p2)
    assert pay.checkout_session_id and pay.status == pb.PAYMENT_STATUS_CREATED
    s3, p3 = c.call("CreateCheckout", req, idempotency_key="retry-me")
    assert s3.code == pb.OK and p3 == p2, "the successful answer is now the key's stored one"


@pytest.mark.test_timeout(60)
def test_janitor_resumes_without_a_caller(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env={"PAYMENTSD_JANITOR_INTERVAL": "1"})
    c = d.client(timeout=CALL_TIMEOUT)
    cs.set_stock(c, "jan", 3)
    fake_stripe.add_fault(kind="status", status=500, times=100000)
    status, _ = c.call("CreateCheckout", checkout_request("deal-jan", [item("jan", 2, 500)]))
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "Stripe down")
    assert cs.health(c).pending_operations >= 1
    fake_stripe.clear_faults()
    # The janitor (every second) resumes it; the breaker may need its 5 s cool-down first.
    left = cs.wait_no_pending(d, timeout=25)
    assert left == 0, f"{left} operation(s) still pending 25 s after Stripe came back"
    pay = cs.get_payment(c, deal_id="deal-jan")
    assert pay.status == pb.PAYMENT_STATUS_CREATED and pay.checkout_session_id, (
        f"after the janitor: {cs.status_name(pay.status)} session={pay.checkout_session_id!r}")
    sessions = fake_stripe.sessions()
    assert [s["id"] for s in sessions] == [pay.checkout_session_id]
    _assert_one_key(_posts(fake_stripe), "live attempts and the janitor's")
    assert cs.get_stock(c, "jan").reserved == 2


def test_lock_timeout_while_the_deal_is_busy(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET_JANITOR)
    fake_stripe.add_fault(kind="delay", ms=2500, times=1)
    slow = d.client(timeout=CALL_TIMEOUT)
    first = slow.request("CreateCheckout", checkout_request("deal-busy"), timeout_ms=20000)
    slow.send_request(first)
    time.sleep(0.5)  # the first call holds the deal's lock, waiting for Stripe
    with d.client(timeout=CALL_TIMEOUT) as c:
        t0 = time.monotonic()
        status, _ = c.call("CreateCheckout", checkout_request("deal-busy"), timeout_ms=500)
        elapsed = time.monotonic() - t0
        assert status.code == pb.DEADLINE_EXCEEDED, (
            f"deal busy past the deadline: expected DEADLINE_EXCEEDED, got {h.describe_status(status)}")
        assert elapsed < 2.0, f"lock_timeout after {elapsed:.2f} s for a 500 ms deadline"
        # Another deal is not blocked by the busy one.
        other = create_ok(c, checkout_request("deal-free"), "another deal meanwhile")
        assert other.created
    resp = slow.recv_response(first.request_id, timeout=CALL_TIMEOUT)
    assert resp.status.code == pb.OK, h.describe_status(resp.status)
    assert fake_stripe.counters()["sessions_created"] == 2
    # protocol.md, "Reasons that callers rely on": the lock's deadline is lock_timeout.
    expect_error(status, "DEADLINE_EXCEEDED", "lock_timeout", "deal busy past the deadline")


@pytest.mark.test_timeout(90)
def test_restart_with_pending_operation_and_hanging_stripe_still_serves(make_daemon, fake_stripe,
                                                                        pb):
    """Resuming at start-up must not keep the daemon from serving while Stripe hangs."""
    d = make_daemon(env={"STRIPE_API_BASE": fake_stripe.url, **QUIET_JANITOR})
    d.start()
    with d.client(timeout=CALL_TIMEOUT) as c:
        cs.set_stock(c, "hang", 2)
        fake_stripe.add_fault(kind="status", status=500, times=3)
        status, _ = c.call("CreateCheckout", checkout_request("deal-hang", [item("hang", 1, 100)]))
        expect_error(status, "UNAVAILABLE", "stripe_unavailable", "setup: Stripe down")
    assert d.stop() == 0
    fake_stripe.clear_faults()
    fake_stripe.add_fault(kind="delay", ms=20000, times=3)  # Stripe now hangs
    t0 = time.monotonic()
    d.start(ready_timeout=10)
    ready = time.monotonic() - t0
    assert ready < 10, f"ready after {ready:.1f} s"
    with d.client(timeout=5) as c:
        t1 = time.monotonic()
        st = cs.get_stock(c, "hang")
        pay = cs.get_payment(c, deal_id="deal-hang")
        took = time.monotonic() - t1
    assert took < 3, f"reads took {took:.1f} s while Stripe hangs"
    assert st.reserved == 1 and pay.status == pb.PAYMENT_STATUS_CREATED
