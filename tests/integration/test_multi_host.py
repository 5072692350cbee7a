"""More than one host (behaviour.md guarantee 15): two daemons, each with its own socket, share
one PostgreSQL database and one fake Stripe, as two hosts of one deployment do.

What one daemon guarantees on its own (test_checkout.py, test_refunds.py, test_webhooks.py,
test_idempotency.py, test_checkout_crash.py) must hold when the callers are split across the
two: one checkout per deal, the refund cap, one fulfilment per event, one effect per
idempotency key, a host that dies mid-operation finished by the other (its per-deal lock
released with its database sessions), and a PostgreSQL outage that callers see as UNAVAILABLE
(docs/postgresql.md: `database_unreachable`, safe to retry with the same key) and that the
daemons ride out without a restart.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

import checkout_support as cs
import paymentsd_harness as h
import refund_support as rs
import webhook_support as ws
from checkout_support import checkout_request, item

pytestmark = pytest.mark.postgresql_only

QUIET = {"PAYMENTSD_JANITOR_INTERVAL": "3600"}
SKU = "mh-sku"


def _two_hosts(make_daemon, fake_stripe, env_a: dict | None = None,
               env_b: dict | None = None) -> tuple[h.Daemon, h.Daemon]:
    """Host A and host B on the test's database, started together: their migrations race,
    as they do when a deployment's hosts boot at once."""
    base = {"STRIPE_API_BASE": fake_stripe.url}
    a = make_daemon(env={**base, **QUIET, **(env_a or {})}, name="host-a")
    b = make_daemon(env={**base, **QUIET, **(env_b or {})}, name="host-b")
    assert a.env["PAYMENTSD_DB"] == b.env["PAYMENTSD_DB"] and h.is_postgres(a.db_path), (
        f"test setup: the hosts must share one PostgreSQL database: {a.db_path!r} {b.db_path!r}")
    a.start(wait=False)
    b.start(wait=False)
    a.wait_ready()
    b.wait_ready()
    return a, b


def _host(hosts, i: int) -> h.Daemon:
    """Callers alternate between the hosts."""
    return hosts[i % len(hosts)]


def _advisory_locks(d: h.Daemon) -> list[tuple]:
    return d.db_rows(
        "SELECT objid, pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "ORDER BY objid")


# ---------------------------------------------------------------------------
# One deal, fifty callers on two hosts


@pytest.mark.test_timeout(120)
def test_fifty_concurrent_creates_of_one_deal_on_two_hosts(make_daemon, fake_stripe, pb):
    hosts = _two_hosts(make_daemon, fake_stripe)
    req = checkout_request("deal-mh-race", [item("tee", 1, 2500)])

    def one(i):
        with h.Client(_host(hosts, i).socket_path, timeout=45) as c:
            return c.call("CreateCheckout", req, timeout_ms=40000, timeout=45)

    results = cs.run_concurrently(50, one, timeout=60)
    pay = cs.assert_one_checkout(cs.all_answered_ok(results, "50 creates on two hosts"), fake_stripe,
                                 "50 concurrent creates of one deal on two hosts")
    for d in hosts:
        with d.client() as c:
            listed = cs.list_payments(c, "deal-mh-race")
        assert [(p.payment_id, p.status) for p in listed] == [
            (pay.payment_id, pb.PAYMENT_STATUS_CREATED)], (
            f"ListPayments on {d.name}: "
            f"{[(p.payment_id, cs.status_name(p.status)) for p in listed]}")


# ---------------------------------------------------------------------------
# The refund cap across hosts


@pytest.mark.test_timeout(150)
def test_twenty_concurrent_refunds_on_two_hosts_never_exceed_the_payment(make_daemon, fake_stripe,
                                                                         pb):
    hosts = _two_hosts(make_daemon, fake_stripe)
    with hosts[0].client(timeout=rs.CALL_TIMEOUT) as c:
        pay = rs.paid_payment(c, fake_stripe, "deal-mh-refund", SKU, 1, 100, set_stock=10)
    # Slow Stripe down so that refunds racing through the two hosts overlap there.
    fake_stripe.add_fault(rs.REFUNDS_ROUTE, kind="delay", ms=100, times=20)

    def one(i):
        with h.Client(_host(hosts, i).socket_path, timeout=60) as cl:
            status, ref, _ = rs.refund(cl, f"mh-conc-{i}", payment_id=pay.payment_id, amount=10,
                                       timeout=60)
            return status, ref

    results = cs.run_concurrently(20, one, timeout=90)
    ok, refused = rs.concurrent_refund_answers(results, 10, "20 refunds on two hosts")

    for d in hosts:
        got, at_fake = rs.assert_agrees_with_stripe(
            d.client(timeout=30), fake_stripe, pay.payment_id,
            f"after 20 concurrent refunds of 10 on 100, seen from {d.name}")
    ctx = (f"{len(ok)} OK, {len(refused)} refused; daemon {rs.describe_payment(got)}; "
           f"fake {rs.describe_fake(at_fake)}")
    assert rs.live_sum(at_fake) == 100 and got.amount_refunded == 100 and len(ok) == 10, (
        f"20 refunds of 10 on a payment of 100, split across two hosts, must refund exactly "
        f"100 in 10 refunds: {ctx}")
    assert got.status == pb.PAYMENT_STATUS_REFUNDED, ctx
    rs.assert_one_key_per_row(fake_stripe, "concurrent refunds on two hosts")
    assert len(rs.refund_posts(fake_stripe)) == 10, (
        f"{len(rs.refund_posts(fake_stripe))} POST /v1/refunds for 10 refunds: {ctx}")


# ---------------------------------------------------------------------------
# One event, delivered to both hosts at once


@pytest.mark.test_timeout(90)
def test_one_event_delivered_to_both_hosts_five_times_fulfils_once(make_daemon, fake_stripe, pb):
    hosts = _two_hosts(make_daemon, fake_stripe)
    c = hosts[0].client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, "deal-mh-wh", SKU, 2)
    fake_stripe.complete_session(pay.checkout_session_id, paid=True)
    body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)

    # Five times to each host, all at once (Stripe's retries and a load balancer's).
    def one(i):
        with h.Client(_host(hosts, i).socket_path, timeout=30) as cc:
            return ws.deliver(cc, body, sig, timeout=30)

    results = cs.run_concurrently(10, one, timeout=40)
    cs.all_answered_ok(results, "10 deliveries on two hosts")
    outcomes = sorted(ws.outcome_name(r.outcome) for _, r in results)
    assert outcomes == ["EVENT_OUTCOME_APPLIED"] + ["EVENT_OUTCOME_DUPLICATE"] * 9, (
        f"one event delivered 5 times to each of two hosts: outcomes {outcomes}, expected one "
        f"APPLIED and nine DUPLICATE")

    for d in hosts:
        with d.client(timeout=30) as cc:
            payments = cs.list_payments(cc, "deal-mh-wh")
            assert len(payments) == 1 and payments[0].status == pb.PAYMENT_STATUS_PAID, (
                f"{d.name}: payments {ws.summary(payments)}")
            assert payments[0].order_id.startswith("ord_"), ws.summary(payments)
            st = cs.get_stock(cc, SKU)
            assert (st.on_hand, st.reserved) == (8, 0), (
                f"{d.name}: stock must be committed exactly once (on_hand 10 -> 8, reserved "
                f"2 -> 0): {st}")
            paid = ws.paid_transitions(cc, "deal-mh-wh")
            assert len(paid) == 1, f"{d.name}: {len(paid)} audit rows moved the payment to PAID"
    orders = hosts[0].db_rows("SELECT count(*) FROM orders")
    assert orders == [(1,)], f"orders in the shared database: {orders}"


# ---------------------------------------------------------------------------
# One idempotency key, sent to both hosts


@pytest.mark.test_timeout(90)
def test_one_idempotency_key_on_both_hosts_has_one_effect(make_daemon, fake_stripe, pb):
    # The delay makes the calls overlap inside the daemons, not only on the wire.
    slow = {"PAYMENTSD_TEST_DELAY_MS": "500"}
    hosts = _two_hosts(make_daemon, fake_stripe, slow, slow)
    with hosts[0].client(timeout=20) as c:
        cs.set_stock(c, "cog", 10)
    adjust = pb.StockAdjustment(sku="cog", delta=3)

    def one_adjust(i):
        with h.Client(_host(hosts, i).socket_path, timeout=20) as cl:
            return cl.call("AdjustStock", adjust, idempotency_key="mh-adj", timeout_ms=15000,
                           timeout=20)

    results = cs.run_concurrently(4, one_adjust, timeout=30)
    cs.all_answered_ok(results, "AdjustStock with one key on two hosts")
    assert len({p for _, p in results}) == 1, "one key on two hosts got different answers"
    for d in hosts:
        with d.client(timeout=20) as c:
            on_hand = cs.get_stock(c, "cog").on_hand
        assert on_hand == 13, (
            f"AdjustStock +3 with one key, 4 calls on two hosts: on_hand {on_hand} on {d.name}, "
            f"expected 13")

    req = checkout_request("deal-mh-key", [item("x", 1, 100)])

    def one_create(i):
        with h.Client(_host(hosts, i).socket_path, timeout=20) as cl:
            return cl.call("CreateCheckout", req, idempotency_key="mh-co", timeout_ms=15000,
                           timeout=20)

    results = cs.run_concurrently(4, one_create, timeout=30)
    cs.all_answered_ok(results, "CreateCheckout with one key on two hosts")
    payloads = {p for _, p in results}
    assert len(payloads) == 1, "CreateCheckout with one key on two hosts got different answers"
    assert pb.Payment.FromString(payloads.pop()).created is True, (
        "every caller of one key gets the first call's response, which opened the checkout")
    assert fake_stripe.counters()["sessions_created"] == 1
    # Later, sequentially, on each host: the stored answer, byte for byte.
    first = results[0][1]
    for d in hosts:
        with d.client(timeout=20) as c:
            status, payload = c.call("CreateCheckout", req, idempotency_key="mh-co")
        assert status.code == pb.OK and payload == first, (
            f"the replay on {d.name} differs: {h.describe_status(status)}")


# ---------------------------------------------------------------------------
# A host dies in the middle of a checkout; the other finishes it


@pytest.mark.test_timeout(120)
@pytest.mark.parametrize("crash_point", ["create_checkout.payment_recorded",
                                         "create_checkout.session_created"])
def test_a_host_killed_mid_checkout_is_finished_by_the_other(make_daemon, fake_stripe, pb,
                                                            crash_point):
    """Host A ends at the crash point (like kill -9: its database sessions, and the per-deal
    advisory lock with them, go away); host B's janitor (every second) resumes the checkout
    with the same Stripe Idempotency-Key, and B then serves the deal."""
    assert crash_point in cs.crash_points(), f"{crash_point} is not a crash point"
    deal = "deal-mh-crash"
    base = {"STRIPE_API_BASE": fake_stripe.url}
    b = make_daemon(env={**base, "PAYMENTSD_JANITOR_INTERVAL": "1"}, name="host-b").start()
    a = make_daemon(env={**base, **QUIET}, name="host-a")
    with b.client(timeout=30) as c:
        cs.set_stock(c, SKU, 10)
    assert cs.wait_no_pending(b, timeout=20) == 0, "test setup: host B is busy"
    # What B holds when idle (a janitor sweep may be under way in one sample: the fewest).
    idle_locks = min((_advisory_locks(b) for _ in range(5) if not time.sleep(0.2)), key=len)

    req = checkout_request(deal, [item(SKU, 3, 1000)])
    answer = cs.crash_run(a, crash_point,
                          lambda c: c.call("CreateCheckout", req, timeout_ms=20000, timeout=30)[0])

    # B resumes what A left: the deal's payment ends CREATED with its session, nothing pending.
    deadline = time.monotonic() + 30
    while True:
        with b.client(timeout=30) as c:
            payments = cs.list_payments(c, deal)
            pending = cs.health(c).pending_operations
        done = (len(payments) == 1 and payments[0].status == pb.PAYMENT_STATUS_CREATED
                and payments[0].checkout_session_id and pending == 0)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    summary = [(p.payment_id, cs.status_name(p.status), p.checkout_session_id) for p in payments]
    sessions = fake_stripe.sessions_for_deal(deal)
    ctx = (f"host A ended at {crash_point} (its call answered: {answer}); host B sees payments "
           f"{summary}, pending {pending}; fake sessions of the deal "
           f"{[(s['id'][-8:], s['status']) for s in sessions]}")
    assert done, f"host B did not finish host A's checkout within 30 s: {ctx}"
    pay = payments[0]
    assert [s["id"] for s in sessions] == [pay.checkout_session_id], (
        f"one checkout, one session at Stripe: {ctx}")
    assert sessions[0]["status"] == "open", ctx

    # Every session create for the payment, A's and B's, carried one Idempotency-Key.
    keys = {r["idempotency_key"] for r in fake_stripe.requests(cs.SESSIONS_ROUTE)
            if ((r.get("params") or {}).get("metadata") or {}).get("payment_id") == pay.payment_id}
    assert len(keys) == 1 and None not in keys, (
        f"the session of {pay.payment_id} was created with the keys {keys}: {ctx}")

    with b.client(timeout=30) as c:
        stock = cs.get_stock(c, SKU)
        assert (stock.on_hand, stock.reserved) == (10, 3), f"stock {stock}: {ctx}"
        # A's per-deal lock is gone with A: B takes the deal at once (no lock_timeout).
        again = cs.create_ok(c, req, "the deal on host B after host A died", timeout_ms=5000)
        assert again.payment_id == pay.payment_id and again.created is False, (
            f"host B answered {again.payment_id} created={again.created}: {ctx}")
        status, _ = c.call("CreateCheckout", checkout_request(deal, [item(SKU, 1, 1000)],
                                                              on_open=pb.ON_OPEN_REPLACE),
                           timeout_ms=5000, timeout=30)
        assert status.code == pb.OK, (
            f"REPLACE of the deal on host B after host A died: {h.describe_status(status)}")

    # And no advisory lock is left over: once B is idle, what is held is what B held idle.
    deadline = time.monotonic() + 15
    while True:
        cs.wait_no_pending(b, timeout=15)
        locks = _advisory_locks(b)
        if len(locks) <= len(idle_locks) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(locks) <= len(idle_locks), (
        f"advisory locks held with host B idle: {locks}; before host A ran: {idle_locks}")


# ---------------------------------------------------------------------------
# PostgreSQL goes away while calls run, and comes back


CALLERS_PER_HOST = 3
OUTAGE_SECONDS = 3.0
# docs/postgresql.md, "When PostgreSQL is unreachable": unreachable, or busy when no connection
# could be had in time (while the pool reconnects).
OUTAGE_REASONS = ("database_unreachable", "database_busy")


class _Caller(threading.Thread):
    """A client of one host that opens checkout after checkout; an answer that is not OK is
    retried with the same request and idempotency key, as protocol.md says to."""

    def __init__(self, d: h.Daemon, tag: str, stop: threading.Event, deadline: float):
        super().__init__(daemon=True)
        self.d, self.tag, self.stop, self.deadline = d, tag, stop, deadline
        self.answers: dict[str, list] = {}   # deal -> [(time, Status, payload)]
        self.error: BaseException | None = None

    def run(self):
        p = h.pb()
        try:
            with h.Client(self.d.socket_path, timeout=30) as c:
                for n in itertools.count():
                    if self.stop.is_set():
                        return
                    deal = f"deal-out-{self.tag}-{n}"
                    req = checkout_request(deal, [item("out", 1, 500 + n)])
                    got = self.answers.setdefault(deal, [])
                    while True:
                        status, payload = c.call("CreateCheckout", req, idempotency_key=f"k-{deal}",
                                                 timeout_ms=20000, timeout=30)
                        got.append((time.monotonic(), status, payload))
                        if status.code == p.OK or time.monotonic() > self.deadline:
                            break
                        time.sleep(0.1)
                    if status.code != p.OK:
                        return  # past the deadline: the test reports the deal
                    time.sleep(0.2)  # a few hundred deals in all, not thousands to check
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


def _wait_serving(d: h.Daemon, timeout: float) -> str:
    """Poll Health until SERVING; returns "" or the last thing seen."""
    p = h.pb()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with h.Client(d.socket_path, timeout=5) as c:
                status, payload = c.call("Health", p.HealthRequest(), timeout=5)
            if status.code == p.OK and p.HealthReply.FromString(payload).status == \
                    p.SERVING_STATUS_SERVING:
                return ""
            last = (h.describe_status(status) if status.code != p.OK
                    else f"Health status {p.HealthReply.FromString(payload).status}")
        except (OSError, h.ConnectionClosed) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.2)
    return last or "no answer"


@pytest.mark.test_timeout(180)
def test_postgresql_outage_answers_unavailable_and_the_hosts_recover(make_daemon, fake_stripe,
                                                                     pb, pg_server):
    if not pg_server.can_restart:
        pytest.skip("PAYMENTSD_TEST_POSTGRES_URI names a server this test cannot stop")
    hosts = _two_hosts(make_daemon, fake_stripe)
    pids = [d.pid for d in hosts]
    stop = threading.Event()
    deadline = time.monotonic() + 120
    callers = [_Caller(d, f"{d.name}-{i}", stop, deadline)
               for d in hosts for i in range(CALLERS_PER_HOST)]
    for t in callers:
        t.start()
    restarted = False
    try:
        time.sleep(1.0)  # calls succeed before the outage
        outage_from = time.monotonic()
        pg_server.stop("fast")
        time.sleep(OUTAGE_SECONDS)
        pg_server.start()
        restarted = True
        outage_to = time.monotonic()
        # Back without a restart of the daemons, within a bound.
        for d in hosts:
            last = _wait_serving(d, 60)
            assert not last, f"{d.name} not SERVING 60 s after PostgreSQL came back: {last}"
        # Let every caller make a call that works after the outage.
        time.sleep(2.0)
    finally:
        if not restarted:
            pg_server.start()
        stop.set()
        for t in callers:
            t.join(60)

    stuck = [t.tag for t in callers if t.is_alive()]
    assert not stuck, f"callers still waiting for an answer: {stuck}"
    errors = [(t.tag, repr(t.error)) for t in callers if t.error is not None]
    assert not errors, f"callers' connections failed (a daemon hung up or died?): {errors}"
    assert [d.pid for d in hosts] == pids and all(d.alive() for d in hosts), (
        "a daemon ended during the outage")

    answers = {deal: got for t in callers for deal, got in t.answers.items()}
    refused = [(deal, s) for deal, got in answers.items() for _, s, _ in got if s.code != pb.OK]
    wrong = [(deal, h.describe_status(s)) for deal, s in refused
             if s.code != pb.UNAVAILABLE or s.reason not in OUTAGE_REASONS]
    assert not wrong, (
        f"during the outage calls must answer UNAVAILABLE {' or '.join(OUTAGE_REASONS)}; other "
        f"answers: {wrong[:5]} ({len(wrong)} in all)")
    assert any(s.reason == "database_unreachable" for _, s in refused), (
        f"no call answered UNAVAILABLE database_unreachable during {OUTAGE_SECONDS} s without "
        f"PostgreSQL: did the daemons queue the calls instead? ({len(answers)} deals, "
        f"{len(refused)} refusals)")
    unfinished = [deal for deal, got in answers.items() if got[-1][1].code != pb.OK]
    assert not unfinished, (
        f"deals still refused after PostgreSQL came back (retried with their key until the "
        f"deadline): {unfinished}")
    late_ok = [t.tag for t in callers
               if not any(at > outage_to and s.code == pb.OK
                          for got in t.answers.values() for at, s, _ in got)]
    assert not late_ok, f"callers with no OK answer after PostgreSQL came back: {late_ok}"

    # Nothing lost, nothing half-applied: every deal has the one payment its OK answer named,
    # CREATED with its session, which is the deal's only session at Stripe and open.
    for d in hosts:
        assert cs.wait_no_pending(d, timeout=30) == 0, f"{d.name}: operations still pending"
    open_at_fake: dict[str, list] = {}
    for s in fake_stripe.sessions():
        open_at_fake.setdefault(cs.session_deal(s), []).append(s)
    problems = []
    with hosts[0].client(timeout=30) as c:
        for deal, got in sorted(answers.items()):
            ok_ids = {pb.Payment.FromString(payload).payment_id
                      for _, s, payload in got if s.code == pb.OK}
            listed = cs.list_payments(c, deal)
            summary = [(p.payment_id, cs.status_name(p.status), p.checkout_session_id)
                       for p in listed]
            at_fake = [(x["id"], x["status"]) for x in open_at_fake.get(deal, [])]
            if (len(ok_ids) != 1 or len(listed) != 1 or listed[0].payment_id not in ok_ids
                    or listed[0].status != pb.PAYMENT_STATUS_CREATED
                    or at_fake != [(listed[0].checkout_session_id, "open")]):
                problems.append(f"{deal}: answered {sorted(ok_ids)}, stored {summary}, "
                                f"at Stripe {at_fake}")
    assert not problems, (
        f"{len(problems)} of {len(answers)} deals are not one CREATED payment with one open "
        f"session (outage {outage_to - outage_from:.1f} s):\n  " + "\n  ".join(problems[:10]))
    orphans = hosts[0].db_rows(
        "SELECT payment_id, deal_id FROM payments WHERE status = 'CREATED' "
        "AND (checkout_session_id IS NULL OR checkout_session_id = '')")
    assert not orphans, f"CREATED payments without a session: {orphans}"
    # What libpq or the store say about the lost connections is logged like everything else.
    for d in hosts:
        h.assert_clean_stderr(d)
