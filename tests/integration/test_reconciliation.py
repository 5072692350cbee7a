"""Nothing waits for a webhook that never comes (issue 12, guarantee 9): reconciliation with Stripe.

No webhook is delivered in these tests unless one says so: what Stripe did (a customer
paying, a session expiring, a dashboard refund, an async payment's result) reaches the
daemon only through its own calls to the fake, which are

- the Events API catch-up: every janitor sweep and every `Reconcile` first pages
  `GET /v1/events` (`types[]` = the types the daemon handles, `limit=100`) from a cursor
  kept in the database; without a cursor (the first start) from `created[gte]` = now -
  PAYMENTSD_EVENTS_LOOKBACK (default 3 days) with `starting_after`, with one by
  `ending_before=<cursor>`; each event goes through the webhook inbox (stored by id,
  applied once: a webhook for an event caught up answers DUPLICATE, and vice versa);
- asking Stripe (`GET /v1/checkout/sessions/{id}`) about CREATED payments: `Reconcile`
  about all of them, the janitor about those older than PAYMENTSD_ASK_STRIPE_AFTER, with a
  doubling backoff per payment.

The daemons here run their janitor once an hour (PAYMENTSD_JANITOR_INTERVAL=3600) so that
`Reconcile` is what reconciles, except in the janitor's own test. Events made "days ago"
come from the fake's clock set back (`POST /_fake/clock {"offset_seconds": -N}`); a
no_payment_required completion from `POST /_fake/sessions/{id}/complete
{"payment_status": "no_payment_required"}` (amount_total 0, no payment intent).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

import checkout_support as cs
import claims_support as cl
import paymentsd_harness as h
import refund_support as rs
import webhook_support as ws
from checkout_support import checkout_request, item

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

QUIET = {"PAYMENTSD_JANITOR_INTERVAL": "3600"}
EVENTS_ROUTE = "GET /v1/events"
SESSION_ROUTE = "GET /v1/checkout/sessions/{session}"
HANDLED_TYPES = {
    "checkout.session.completed", "checkout.session.expired",
    "checkout.session.async_payment_succeeded", "checkout.session.async_payment_failed",
    "charge.refunded", "refund.created", "refund.updated", "refund.failed",
    "customer.subscription.created", "customer.subscription.updated",
    "customer.subscription.deleted",
}
DEFAULT_LOOKBACK = 259200
CATCH_UP_POINTS = ("stripe_catch_up.page_fetched", "stripe_catch_up.page_applied")
CONFIRM_POINT = "confirm_checkout.session_retrieved"

CAUGHT_UP = "paymentsd_stripe_events_caught_up_total"
SETTLED_BY_ASKING = "paymentsd_payments_settled_by_asking_total"
CURSOR_AGE = "paymentsd_stripe_events_cursor_age_seconds"
OUTCOME_UNKNOWN = "paymentsd_payments_outcome_unknown"

SKU = "rec-sku"


# ---------------------------------------------------------------------------
# Helpers


def _env(fake, **extra) -> dict:
    return {"STRIPE_API_BASE": fake.url, **QUIET, **extra}


def _stock(c, sku=SKU):
    st = cs.get_stock(c, sku)
    return st.on_hand, st.reserved


def _open(c, deal, qty, unit_amount=1000, claims=()):
    return cs.create_ok(c, checkout_request(deal, [item(SKU, qty, unit_amount)], claims=claims))


def _reconcile(c):
    return rs.reconcile(c)


def _report(r) -> str:
    return (f"expired={r.expired} resumed={r.resumed} repaired={r.repaired} "
            f"orphans={r.orphans} stuck={r.stuck}")


def _metric(d: h.Daemon, name: str):
    samples, _ = h.parse_prometheus(d.metrics_text())
    found = h.find_samples(samples, name)
    return found[0][2] if found else None


def _metrics(d: h.Daemon) -> dict:
    samples, _ = h.parse_prometheus(d.metrics_text())
    out = {}
    for name in (CAUGHT_UP, SETTLED_BY_ASKING, CURSOR_AGE, OUTCOME_UNKNOWN):
        found = h.find_samples(samples, name)
        out[name] = found[0][2] if found else None
    return out


def _wait_metric(d, name, ok, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = _metric(d, name)
        if (value is not None and ok(value)) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _types_of(params) -> set:
    types = params.get("types")
    if isinstance(types, dict):
        return set(types.values())
    if isinstance(types, list):
        return set(types)
    return set()


def _event_requests(fake, since: int = 0) -> list[dict]:
    """The daemon's GET /v1/events requests (after the first `since`), oldest first."""
    return fake.requests(EVENTS_ROUTE)[since:]


def _describe_requests(reqs) -> str:
    return "; ".join(
        f"{r['status']} " + ",".join(f"{k}={v}" for k, v in sorted(r["params"].items())
                                     if k != "types")
        for r in reqs[-12:])


def _check_event_request_shape(reqs, what: str):
    """Every GET /v1/events: limit=100, types[] = the handled types, one cursor at most."""
    assert reqs, f"{what}: the daemon never called GET /v1/events"
    for r in reqs:
        p = r["params"]
        assert str(p.get("limit")) == "100", f"{what}: GET /v1/events with limit {p.get('limit')!r}: {p}"
        assert _types_of(p) == HANDLED_TYPES, (
            f"{what}: GET /v1/events types[] {sorted(_types_of(p))}, expected "
            f"{sorted(HANDLED_TYPES)}")
        assert not ("starting_after" in p and "ending_before" in p), f"{what}: both cursors: {p}"


def _handled_events(fake) -> list[dict]:
    return [e for e in ws.fake_events(fake) if e["type"] in HANDLED_TYPES]


def _redeliver_all(c, fake, pb, what: str, events=None):
    """Every handled event at the fake delivered by webhook: each must be DUPLICATE."""
    events = _handled_events(fake) if events is None else events
    outcomes = rs.deliver_events(c, fake, events, what)
    bad = [(e["type"], e["id"], o) for e, o in zip(events, outcomes) if o != "DUPLICATE"]
    assert not bad, (
        f"{what}: events the catch-up already stored, delivered by webhook, answered "
        f"{bad} (expected DUPLICATE for all {len(events)})")


def _paid_ok(c, pb, deal, session, want_stock=None, amount_total=None, what=""):
    payments = cs.list_payments(c, deal)
    assert len(payments) == 1, f"{what}: {deal} payments {ws.summary(payments)}"
    got = payments[0]
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id.startswith("ord_"), (
        f"{what}: {deal} is {cs.status_name(got.status)} order {got.order_id!r} while its session "
        f"is {session['status']}/{session['payment_status']} at Stripe")
    if session.get("payment_intent"):
        assert got.payment_intent_id == session["payment_intent"], (
            f"{what}: {deal} payment_intent_id {got.payment_intent_id!r}, Stripe's "
            f"{session['payment_intent']!r}")
    if amount_total is not None:
        assert got.amount_total == amount_total, (
            f"{what}: {deal} amount_total {got.amount_total}, Stripe's {amount_total}")
    n = len(ws.paid_transitions(c, deal))
    assert n == 1, f"{what}: {deal} moved to PAID {n} times in the audit trail"
    if want_stock is not None:
        assert _stock(c) == want_stock, (
            f"{what}: stock on_hand/reserved {_stock(c)}, expected {want_stock}")
    return got


# ---------------------------------------------------------------------------
# Crash points


def test_catch_up_crash_points_are_listed(paymentsd_bin):
    res = subprocess.run([str(paymentsd_bin), "crash-points"], capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 0, f"paymentsd crash-points exited {res.returncode}: {res.stderr}"
    names = [l.strip() for l in res.stdout.splitlines() if l.strip()]
    missing = [n for n in (*CATCH_UP_POINTS, CONFIRM_POINT) if n not in names]
    assert not missing, f"crash points missing: {missing}; listed: {names}"


# ---------------------------------------------------------------------------
# 1. Paid at Stripe, no webhook: Reconcile fulfils it; the webhook afterwards is DUPLICATE


@pytest.mark.test_timeout(60)
def test_paid_without_webhook_is_fulfilled_by_reconcile(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    cs.set_stock(c, SKU, 10)
    claim = "slug:rec-paid"
    pay = _open(c, "deal-rec-paid", 2, claims=[claim])
    fake_stripe.complete_session(pay.checkout_session_id, paid=True)
    session = fake_stripe.session(pay.checkout_session_id)
    assert cs.get_payment(c, deal_id="deal-rec-paid").status == pb.PAYMENT_STATUS_CREATED, (
        "test setup: paid before any Reconcile or webhook")
    before = len(_event_requests(fake_stripe))

    t0 = int(time.time())
    report = _reconcile(c)
    t1 = int(time.time())
    _paid_ok(c, pb, "deal-rec-paid", session, want_stock=(8, 0), amount_total=2000,
             what="after Reconcile")
    assert cl.claim_state(cl.get_claim(c, claim).state) == "TAKEN", (
        f"the fulfilled checkout's claim: {cl.describe_claim(cl.get_claim(c, claim))}")
    assert report.repaired >= 1, (
        f"Reconcile fulfilled a payment Stripe had paid but reported {_report(report)} "
        f"(repaired counts events caught up and payments settled by asking)")

    # How it asked: GET /v1/events, no cursor yet: created[gte] = now - 3 days.
    reqs = _event_requests(fake_stripe, before)
    _check_event_request_shape(reqs, "first Reconcile")
    first = [r for r in reqs if "ending_before" not in r["params"]]
    assert first, f"the first catch-up used a cursor it cannot have: {_describe_requests(reqs)}"
    for r in first:
        gte = int((r["params"].get("created") or {}).get("gte", -1))
        assert t0 - DEFAULT_LOOKBACK - 3 <= gte <= t1 - DEFAULT_LOOKBACK + 3, (
            f"the first catch-up's created[gte] is {gte}, expected now - {DEFAULT_LOOKBACK} "
            f"(about {t0 - DEFAULT_LOOKBACK}): {_describe_requests(reqs)}")

    # The same event by webhook afterwards: DUPLICATE, nothing changes.
    body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)
    res = ws.deliver_ok(c, body, sig, "the completed event after Reconcile")
    assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE, (
        f"the webhook of an event Reconcile caught up answered {ws.outcome_name(res.outcome)}, "
        f"expected DUPLICATE")
    order = _paid_ok(c, pb, "deal-rec-paid", session, want_stock=(8, 0),
                     what="after the webhook").order_id

    # Reconcile again: from the cursor (the completed event), nothing new.
    before = len(_event_requests(fake_stripe))
    again = _reconcile(c)
    reqs = _event_requests(fake_stripe, before)
    _check_event_request_shape(reqs, "second Reconcile")
    completed_id = ws.event_id_of(body)
    assert reqs[0]["params"].get("ending_before") == completed_id, (
        f"with a cursor the catch-up pages ending_before=<the newest event applied> "
        f"({completed_id}): {_describe_requests(reqs)}")
    assert again.repaired == 0, f"a Reconcile with nothing new reported {_report(again)}"
    assert _paid_ok(c, pb, "deal-rec-paid", session, want_stock=(8, 0),
                    what="after Reconcile again").order_id == order


# ---------------------------------------------------------------------------
# 2. Expired at Stripe, no webhook: released on the next Reconcile


@pytest.mark.test_timeout(60)
def test_expired_without_webhook_is_released_by_reconcile(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    cs.set_stock(c, SKU, 5)
    claim = "slug:rec-expired"
    pay = _open(c, "deal-rec-exp", 5, claims=[claim])
    fake_stripe.expire_session_at_stripe(pay.checkout_session_id)
    assert _stock(c) == (5, 5), f"test setup: {_stock(c)}"
    status, _ = c.call("CreateCheckout", checkout_request("deal-rec-exp-next", [item(SKU, 1, 1000)]),
                       timeout=30)
    assert status.code != pb.OK, "test setup: the stock should still be held by the expired session"

    report = _reconcile(c)
    got = cs.get_payment(c, deal_id="deal-rec-exp")
    assert got.status == pb.PAYMENT_STATUS_EXPIRED and not got.order_id, (
        f"a session expired at Stripe is {cs.status_name(got.status)} after Reconcile "
        f"({_report(report)})")
    assert _stock(c) == (5, 0), f"the expired checkout's 5 units are still held: {_stock(c)}"
    assert cl.claim_state(cl.get_claim(c, claim).state) == "FREE", (
        f"the expired checkout's claim: {cl.describe_claim(cl.get_claim(c, claim))}")
    assert any(e.to_status == "EXPIRED" for e in cs.list_events(c, "deal-rec-exp"))
    # Released for real: another deal takes everything.
    _open(c, "deal-rec-exp-next", 5)
    assert _stock(c) == (5, 5)
    # The expired event by webhook afterwards: DUPLICATE.
    body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.EXPIRED)
    res = ws.deliver_ok(c, body, sig, "the expired event after Reconcile")
    assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE, ws.outcome_name(res.outcome)
    assert _stock(c) == (5, 5), f"the late expired event released stock again: {_stock(c)}"


# ---------------------------------------------------------------------------
# 3. A dashboard refund and async payment results, no webhook: recorded after Reconcile


@pytest.mark.test_timeout(60)
def test_dashboard_refund_and_async_results_without_webhook(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    p = rs.paid_payment(c, fake_stripe, "deal-rec-refund", SKU, 1, 1000, set_stock=10)
    ok = _open(c, "deal-rec-async-ok", 2)
    bad = _open(c, "deal-rec-async-bad", 3)
    for pay in (ok, bad):
        fake_stripe.control("POST", f"/_fake/sessions/{pay.checkout_session_id}/complete",
                            {"paid": False, "payment_method": "sepa_debit"})
    fake_stripe.control("POST", f"/_fake/sessions/{ok.checkout_session_id}/async_result",
                        {"succeeded": True})
    fake_stripe.control("POST", f"/_fake/sessions/{bad.checkout_session_id}/async_result",
                        {"succeeded": False})
    outside = rs.dashboard_refund(fake_stripe, p.payment_intent_id, 300)
    assert _stock(c) == (9, 5), f"test setup: {_stock(c)}"

    report = _reconcile(c)
    ctx = f"after Reconcile ({_report(report)})"
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, p.payment_id, f"dashboard refund, {ctx}")
    assert [(r.amount, r.status, r.stripe_refund_id) for r in got.refunds] == [
        (300, pb.REFUND_STATUS_SUCCEEDED, outside["id"])], (
        f"the dashboard refund made while no webhook came must be recorded once {ctx}: "
        f"{rs.describe_payment(got)}")
    assert (got.status, got.amount_refunded) == (pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 300)

    _paid_ok(c, pb, "deal-rec-async-ok", fake_stripe.session(ok.checkout_session_id),
             what=f"async success, {ctx}")
    failed = cs.get_payment(c, deal_id="deal-rec-async-bad")
    assert failed.status == pb.PAYMENT_STATUS_FAILED and not failed.order_id, (
        f"async failure {ctx}: {cs.status_name(failed.status)} order {failed.order_id!r}")
    assert _stock(c) == (7, 0), (
        f"stock {ctx}: {_stock(c)}, expected 2 more committed and 3 released (7, 0)")

    # A pending dashboard refund, then Stripe settles it: both recorded by the catch-up.
    fake_stripe.control("POST", "/_fake/config", {"refund_status": "pending"})
    pending = rs.dashboard_refund(fake_stripe, p.payment_intent_id, 200)
    _reconcile(c)
    got = rs.payment(c, p.payment_id)
    assert [(r.amount, r.status) for r in got.refunds if r.stripe_refund_id == pending["id"]] == [
        (200, pb.REFUND_STATUS_PENDING)], f"the pending dashboard refund: {rs.describe_payment(got)}"
    rs.resolve_at_stripe(fake_stripe, pending["id"], "succeeded")
    _reconcile(c)
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, p.payment_id, "pending then succeeded")
    assert (got.amount_refunded, len(got.refunds)) == (500, 2), rs.describe_payment(got)

    _redeliver_all(c, fake_stripe, pb, "webhooks after Reconcile")
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, p.payment_id, "after the webhooks")
    assert (got.amount_refunded, len(got.refunds)) == (500, 2), rs.describe_payment(got)
    assert _stock(c) == (7, 0)


# ---------------------------------------------------------------------------
# 4. More than 100 missed events, a 500 for a sweep: nothing lost, nothing applied twice


@pytest.mark.test_timeout(90)
def test_missed_events_are_paged_and_a_failing_events_list_loses_nothing(pay_daemon, fake_stripe,
                                                                         pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    p = rs.paid_payment(c, fake_stripe, "deal-rec-many", SKU, 1, 1000, set_stock=10)
    assert _metric(d, CAUGHT_UP) == 0, f"{CAUGHT_UP} before any catch-up: {_metrics(d)}"

    def refunds(n):
        for _ in range(n):
            rs.dashboard_refund(fake_stripe, p.payment_intent_id, 1)

    def check(n_refunds, caught_up, what, all_known=True):
        if all_known:
            got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, p.payment_id, what)
        else:
            got = rs.payment(c, p.payment_id)
        assert (len(got.refunds), got.amount_refunded) == (n_refunds, n_refunds), (
            f"{what}: {len(got.refunds)} refunds recorded for {got.amount_refunded}, "
            f"expected {n_refunds} of 1 each")
        value = _metric(d, CAUGHT_UP)
        assert value == caught_up, (
            f"{what}: {CAUGHT_UP} is {value}, expected {caught_up} (each missed event counted "
            f"once; the completed event had come by webhook)")

    # First start, no cursor: 60 dashboard refunds = 120 events (and the webhook's completed).
    refunds(60)
    before = len(_event_requests(fake_stripe))
    _reconcile(c)
    reqs = _event_requests(fake_stripe, before)
    _check_event_request_shape(reqs, "first catch-up of 121 events")
    assert any("starting_after" in r["params"] for r in reqs), (
        f"121 events, but the first catch-up never paged with starting_after: "
        f"{_describe_requests(reqs)}")
    check(60, 120, "after the first catch-up (121 events, no cursor)")
    cursor = ws.fake_events(fake_stripe)[-1]["id"]

    # With the cursor: 120 more, pages of ending_before.
    refunds(60)
    before = len(_event_requests(fake_stripe))
    _reconcile(c)
    reqs = _event_requests(fake_stripe, before)
    _check_event_request_shape(reqs, "catch-up of 120 events from a cursor")
    assert reqs[0]["params"].get("ending_before") == cursor, (
        f"the catch-up after the first must start ending_before={cursor} (the newest event "
        f"applied): {_describe_requests(reqs)}")
    assert sum(1 for r in reqs if "ending_before" in r["params"]) >= 2, (
        f"120 events after the cursor need two pages of 100: {_describe_requests(reqs)}")
    check(120, 240, "after the second catch-up (120 events from the cursor)")
    cursor = ws.fake_events(fake_stripe)[-1]["id"]

    # GET /v1/events answers 500 for a whole Reconcile: nothing applied, the cursor stays.
    fake_stripe.add_fault(route=EVENTS_ROUTE, kind="status", status=500, times=1000)
    refunds(5)
    status, payload = c.call("Reconcile", pb.ReconcileRequest(), timeout=rs.CALL_TIMEOUT)
    print(f"\nReconcile while GET /v1/events answers 500: {h.describe_status(status)}")
    assert status.code in (pb.OK, pb.UNAVAILABLE), (
        f"Reconcile while /v1/events fails: {h.describe_status(status)}")
    assert fake_stripe.counters()["faults_injected"] >= 1, "test setup: the fault was not used"
    check(120, 240, "while GET /v1/events answers 500", all_known=False)
    age = _metric(d, CURSOR_AGE)
    assert age is not None and age >= 0, f"{CURSOR_AGE} after two catch-ups read to the end: {age}"
    fake_stripe.clear_faults()

    before = len(_event_requests(fake_stripe))
    _reconcile(c)
    reqs = [r for r in _event_requests(fake_stripe, before) if r["status"] == 200]
    _check_event_request_shape(reqs, "catch-up after the 500s")
    assert reqs[0]["params"].get("ending_before") == cursor, (
        f"after a failed catch-up the next resumes from the same cursor {cursor}: "
        f"{_describe_requests(reqs)}")
    check(125, 250, "after the failure and a Reconcile that works")
    age = _metric(d, CURSOR_AGE)
    assert age is not None and 0 <= age < 30, f"{CURSOR_AGE} just after reading to the end: {age}"

    # Every event once more by webhook: all DUPLICATE (a sample of the 250, oldest to newest).
    evs = _handled_events(fake_stripe)
    assert len(evs) == 251, f"test setup: {len(evs)} events at the fake"
    _redeliver_all(c, fake_stripe, pb, "webhooks after the catch-ups", evs[::25] + [evs[-1]])
    check(125, 250, "after the webhooks")
    assert len(ws.paid_transitions(c, "deal-rec-many")) == 1


# ---------------------------------------------------------------------------
# 5. Events older than the look-back at the first start are not applied


@pytest.mark.test_timeout(60)
@pytest.mark.parametrize("lookback, back", [(None, 4 * 86400), (3600, 2 * 3600)],
                         ids=["default_3_days", "lookback_1_hour"])
def test_events_older_than_the_lookback_are_not_applied(pay_daemon, fake_stripe, pb, lookback,
                                                        back):
    """Two paid payments; a dashboard refund of one made before the look-back (the fake's clock
    set back), one of the other now. (Two payments: a charge.refunded event lists all of its
    charge's refunds, so a new refund of the same charge would rightly bring the old one.)"""
    env = QUIET if lookback is None else {**QUIET, "PAYMENTSD_EVENTS_LOOKBACK": str(lookback)}
    d = pay_daemon(env=env)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    cs.set_stock(c, SKU, 10)
    p_old = rs.paid_payment(c, fake_stripe, "deal-rec-old", SKU, 1, 1000)
    p_new = rs.paid_payment(c, fake_stripe, "deal-rec-new", SKU, 1, 1000)

    fake_stripe.control("POST", "/_fake/clock", {"offset_seconds": -back})
    old = rs.dashboard_refund(fake_stripe, p_old.payment_intent_id, 300)
    fake_stripe.control("POST", "/_fake/clock", {"offset_seconds": 0})
    old_events = rs.refund_events(fake_stripe, old["id"])
    assert len(old_events) == 2 and all(e["created"] <= time.time() - back + 5 for e in old_events), (
        f"test setup: the old refund's events {[(e['type'], e['created']) for e in old_events]}")
    new = rs.dashboard_refund(fake_stripe, p_new.payment_intent_id, 200)

    before = len(_event_requests(fake_stripe))
    t0 = int(time.time())
    _reconcile(c)
    reqs = _event_requests(fake_stripe, before)
    _check_event_request_shape(reqs, "first catch-up")
    want = lookback or DEFAULT_LOOKBACK
    gte = int((reqs[0]["params"].get("created") or {}).get("gte", -1))
    assert abs(gte - (t0 - want)) <= 3, (
        f"first catch-up created[gte]={gte}, expected now - {want} = {t0 - want}: "
        f"{_describe_requests(reqs)}")
    got_new = rs.payment(c, p_new.payment_id)
    assert [(r.amount, r.stripe_refund_id) for r in got_new.refunds] == [(200, new["id"])], (
        f"the refund made now must be caught up: {rs.describe_payment(got_new)}")
    got_old = rs.payment(c, p_old.payment_id)
    assert (got_old.status, list(got_old.refunds)) == (pb.PAYMENT_STATUS_PAID, []), (
        f"a refund {back} s old, before the look-back ({want} s) at the first start, was applied: "
        f"{rs.describe_payment(got_old)}")
    assert _metric(d, CAUGHT_UP) == 2, f"{CAUGHT_UP}: {_metrics(d)}, expected 2 (the new refund's)"

    # The old events were never stored: their webhooks are new, and record the refund then.
    outcomes = rs.deliver_events(c, fake_stripe, old_events, "the old refund's webhooks")
    assert "DUPLICATE" not in outcomes, (
        f"the events older than the look-back were stored by the catch-up: webhooks {outcomes}")
    got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, p_old.payment_id, "after the old webhooks")
    assert got.amount_refunded == 300, rs.describe_payment(got)


# ---------------------------------------------------------------------------
# 6. no_payment_required (100%-off codes): fulfilled by webhook, ConfirmCheckout and Reconcile


@pytest.mark.test_timeout(60)
def test_no_payment_required_is_fulfilled(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=rs.CALL_TIMEOUT)
    cs.set_stock(c, SKU, 10)
    deals = {"webhook": ("deal-rec-free-wh", 1), "confirm": ("deal-rec-free-cf", 2),
             "reconcile": ("deal-rec-free-rc", 3)}
    pays = {}
    for how, (deal, qty) in deals.items():
        pays[how] = _open(c, deal, qty, claims=[f"slug:{deal}"])
        fake_stripe.control("POST", f"/_fake/sessions/{pays[how].checkout_session_id}/complete",
                            {"payment_status": "no_payment_required"})
        s = fake_stripe.session(pays[how].checkout_session_id)
        assert (s["status"], s["payment_status"], s["amount_total"]) == (
            "complete", "no_payment_required", 0), f"test setup: the fake's session {s}"
    assert _stock(c) == (10, 6)

    body, sig = ws.session_delivery(fake_stripe, pays["webhook"].checkout_session_id, ws.COMPLETED)
    assert json.loads(body)["data"]["object"]["amount_total"] == 0
    res = ws.deliver_ok(c, body, sig, "completed, no_payment_required")
    answers = {"webhook": f"HandleStripeEvent {ws.outcome_name(res.outcome)}"}
    status, payload = ws.confirm(c, deal_id="deal-rec-free-cf", timeout=30)
    answers["confirm"] = f"ConfirmCheckout {h.describe_status(status)}"
    if status.code == pb.OK:
        confirmed = pb.Payment.FromString(payload)
        answers["confirm"] += (f" -> {cs.status_name(confirmed.status)} "
                               f"amount_total={confirmed.amount_total}")
    report = _reconcile(c)
    answers["reconcile"] = f"Reconcile {_report(report)}"

    # Each path: PAID, one order, amount_total 0 as Stripe says, stock committed, claim taken.
    problems = []
    for how, (deal, qty) in deals.items():
        got = cs.get_payment(c, deal_id=deal)
        claim = cl.claim_state(cl.get_claim(c, f"slug:{deal}").state)
        seen = (f"{how} ({answers[how]}): {cs.status_name(got.status)} order={got.order_id!r} "
                f"amount_total={got.amount_total} claim={claim} "
                f"paid_transitions={len(ws.paid_transitions(c, deal))}")
        if not (got.status == pb.PAYMENT_STATUS_PAID and got.order_id.startswith("ord_")
                and got.amount_total == 0 and claim == "TAKEN"
                and len(ws.paid_transitions(c, deal)) == 1):
            problems.append(seen)
    assert not problems, (
        "no_payment_required sessions (complete, amount_total 0 at Stripe) must be PAID with "
        "amount_total 0, one order, the claim taken:\n  " + "\n  ".join(problems))
    assert _stock(c) == (4, 0), f"stock after three free checkouts (1+2+3 of 10): {_stock(c)}"
    _redeliver_all(c, fake_stripe, pb, "webhooks of the free checkouts after Reconcile")
    assert _stock(c) == (4, 0)
    for deal, _ in deals.values():
        assert len(ws.paid_transitions(c, deal)) == 1, deal


# ---------------------------------------------------------------------------
# 7. The janitor asks Stripe on its own, with a backoff; the metrics move


@pytest.mark.test_timeout(90)
def test_janitor_asks_stripe_about_open_checkouts(pay_daemon, fake_stripe, pb):
    # Catch-up fails from the start, so the completion event stays invisible: only asking helps.
    fake_stripe.add_fault(route=EVENTS_ROUTE, kind="status", status=500, times=100000)
    d = pay_daemon(env={"PAYMENTSD_JANITOR_INTERVAL": "1", "PAYMENTSD_ASK_STRIPE_AFTER": "1"})
    c = d.client(timeout=rs.CALL_TIMEOUT)
    start = _metrics(d)
    assert start == {CAUGHT_UP: 0, SETTLED_BY_ASKING: 0, CURSOR_AGE: -1, OUTCOME_UNKNOWN: 0}, (
        f"metrics at start, before any catch-up read to the end: {start}")
    cs.set_stock(c, SKU, 10)
    a = _open(c, "deal-rec-ask-paid", 2)
    b = _open(c, "deal-rec-ask-open", 1)
    b_opened = time.monotonic()
    fake_stripe.complete_session(a.checkout_session_id, paid=True)

    got = ws.wait_payment_status(d, "deal-rec-ask-paid", pb.PAYMENT_STATUS_PAID, timeout=20)
    session = fake_stripe.session(a.checkout_session_id)
    assert got.status == pb.PAYMENT_STATUS_PAID, (
        f"a checkout paid at Stripe, its event invisible, is {cs.status_name(got.status)} 20 s "
        f"later with the janitor asking after 1 s every 1 s")
    _paid_ok(c, pb, "deal-rec-ask-paid", session, (8, 1), 2000, "settled by asking")
    assert cs.get_payment(c, deal_id="deal-rec-ask-open").status == pb.PAYMENT_STATUS_CREATED, (
        "an open session at Stripe must be left alone")

    m = _metrics(d)
    assert m[SETTLED_BY_ASKING] == 1, f"{SETTLED_BY_ASKING}: {m}"
    assert m[CURSOR_AGE] == -1, f"{CURSOR_AGE} while every catch-up fails: {m}"
    assert m[CAUGHT_UP] == 0, f"{CAUGHT_UP} while every catch-up fails: {m}"
    unknown = _wait_metric(d, OUTCOME_UNKNOWN, lambda v: v == 1, timeout=5)
    assert unknown == 1, f"{OUTCOME_UNKNOWN} with one open checkout older than 1 s: {_metrics(d)}"

    # Backoff: the open checkout is not asked about in every sweep.
    time.sleep(max(0.0, 8.0 - (time.monotonic() - b_opened)))
    asked_b = [r for r in fake_stripe.requests(SESSION_ROUTE) if b.checkout_session_id in r["path"]]
    waited = time.monotonic() - b_opened
    print(f"\nasked about the open checkout {len(asked_b)} times in {waited:.1f} s")
    assert 1 <= len(asked_b) <= 4, (
        f"the janitor asked about an open checkout {len(asked_b)} times in {waited:.1f} s "
        f"(sweeps every 1 s, ask after 1 s, then a doubling backoff: at most 4)")

    # The catch-up recovers: the completion event is caught up (new to the inbox), the
    # cursor age is known, the webhook is then DUPLICATE.
    fake_stripe.clear_faults()
    age = _wait_metric(d, CURSOR_AGE, lambda v: v >= 0, timeout=15)
    assert age is not None and 0 <= age < 15, f"{CURSOR_AGE} after the catch-up recovered: {_metrics(d)}"
    caught = _wait_metric(d, CAUGHT_UP, lambda v: v >= 1, timeout=5)
    assert caught == 1, f"{CAUGHT_UP} after the catch-up recovered: {_metrics(d)}"
    body, sig = ws.session_delivery(fake_stripe, a.checkout_session_id, ws.COMPLETED)
    res = ws.deliver_ok(c, body, sig, "the completed event after it was caught up")
    assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE, ws.outcome_name(res.outcome)
    m = _metrics(d)
    assert (m[SETTLED_BY_ASKING], m[OUTCOME_UNKNOWN]) == (1, 1), f"metrics at the end: {m}"
    _paid_ok(c, pb, "deal-rec-ask-paid", session, (8, 1), 2000, "at the end")


# ---------------------------------------------------------------------------
# 8. Crash in ConfirmCheckout and in the catch-up, restart, Reconcile


def _crash_run(d: h.Daemon, point: str, call) -> str:
    """Starts `d` armed with PAYMENTSD_CRASH_AT=point, makes `call` once it is ready, and checks
    that it ended at the point with status 137. The point may be reached before the daemon is
    ready (its start-up sweep catches up), so readiness is not required. Disarms it after."""
    d.env["PAYMENTSD_CRASH_AT"] = point
    d.start(wait=False)
    answer = "the daemon ended before it was ready"
    deadline = time.monotonic() + h.READY_TIMEOUT
    while d.proc.poll() is None and time.monotonic() < deadline:
        try:
            c = h.Client(d.socket_path, timeout=5)
        except OSError:
            time.sleep(0.05)
            continue
        with c:
            try:
                status, payload = c.call("Health", pb_().HealthRequest(), timeout=5)
                ready = (status.code == pb_().OK and pb_().HealthReply.FromString(payload).status
                         == pb_().SERVING_STATUS_SERVING)
            except (OSError, h.ConnectionClosed):
                time.sleep(0.05)
                continue
            if not ready:
                time.sleep(0.05)
                continue
            try:
                answer = h.describe_status(call(c))
            except (OSError, h.ConnectionClosed) as e:
                answer = f"connection ended ({type(e).__name__})"
            break
    try:
        rc = d.proc.wait(15)
    except subprocess.TimeoutExpired:
        rc = None
    assert rc is not None, f"the daemon did not stop at crash point {point} (the call answered: {answer})"
    assert rc in (137, -9), f"crash at {point}: exit status {rc}, expected 137 ({answer})"
    assert f"crash point reached: {point}" in d.stderr_text(), (
        f"exit {rc}, but stderr does not say crash point {point} was reached")
    del d.env["PAYMENTSD_CRASH_AT"]
    return answer


def pb_():
    return h.pb()


CRASH_CASES = [(CONFIRM_POINT, "with_cursor")] + [
    (point, start) for point in CATCH_UP_POINTS for start in ("first_start", "with_cursor")]


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("crash_point, cursor", CRASH_CASES,
                         ids=[f"{p}-{s}" for p, s in CRASH_CASES])
def test_crash_restart_reconcile_leaves_nothing_open_that_stripe_settled(make_daemon, fake_stripe,
                                                                         pb, crash_point, cursor):
    d = make_daemon(env=_env(fake_stripe))
    deals = {"refunded": "deal-rc-p", "paid": "deal-rc-a", "expired": "deal-rc-b",
             "open": "deal-rc-c"}

    # 1. Set up without the crash point: a paid payment (by webhook), three open checkouts,
    #    and with_cursor a Reconcile so that the catch-up has a cursor (the completed event).
    d.start()
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        p = rs.paid_payment(c, fake_stripe, deals["refunded"], SKU, 1, 1000, set_stock=10)
        a = _open(c, deals["paid"], 2)
        b = _open(c, deals["expired"], 3)
        _open(c, deals["open"], 1)
        if cursor == "with_cursor":
            _reconcile(c)
    assert d.stop() == 0

    # 2. At Stripe while the daemon is down, no webhook: a refund, an expiry, a payment.
    fake_stripe.expire_session_at_stripe(b.checkout_session_id)
    outside = rs.dashboard_refund(fake_stripe, p.payment_intent_id, 300)
    fake_stripe.complete_session(a.checkout_session_id, paid=True)
    if crash_point == CONFIRM_POINT:
        # The events stay invisible for the crash run, so that retrieving a session (by
        # ConfirmCheckout, or by the start-up sweep asking Stripe) is what reaches the point.
        fake_stripe.add_fault(route=EVENTS_ROUTE, kind="status", status=500, times=100000)

        def call(c):
            return ws.confirm(c, deal_id=deals["paid"], timeout=30)[0]
    else:
        def call(c):
            return c.call("Reconcile", pb.ReconcileRequest(), timeout=30)[0]

    answer = _crash_run(d, crash_point, call)
    fake_stripe.clear_faults()

    # 3. Restart, wait for what is pending, Reconcile.
    d.start()
    assert cs.wait_no_pending(d, timeout=20) == 0, f"operations still pending after {crash_point}"
    with d.client(timeout=rs.CALL_TIMEOUT) as c:
        report = _reconcile(c)
        payments = {k: cs.list_payments(c, deal) for k, deal in deals.items()}
        sessions = {s["id"]: s for s in fake_stripe.sessions()}
        ctx = (f"crash at {crash_point} ({cursor}; the call answered: {answer}); Reconcile "
               f"{_report(report)}; payments "
               f"{ {k: ws.summary(v) for k, v in payments.items()} }")
        print(f"\n[{crash_point} {cursor}] {ctx}")

        for key, ps in payments.items():
            assert len(ps) == 1, f"{key}: {len(ps)} payments: {ctx}"
            pay = ps[0]
            s = sessions[pay.checkout_session_id]
            if pay.status == pb.PAYMENT_STATUS_CREATED:
                assert s["status"] == "open", (
                    f"{key}: payment CREATED while its session is {s['status']}/"
                    f"{s['payment_status']} at Stripe: {ctx}")
        _paid_ok(c, pb, deals["paid"], sessions[a.checkout_session_id], what=ctx)
        expired = payments["expired"][0]
        assert expired.status == pb.PAYMENT_STATUS_EXPIRED, f"the expired session's payment: {ctx}"
        assert payments["open"][0].status == pb.PAYMENT_STATUS_CREATED, f"the open checkout: {ctx}"
        got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, p.payment_id, ctx)
        assert [(r.amount, r.stripe_refund_id) for r in got.refunds] == [(300, outside["id"])], (
            f"the dashboard refund must be recorded exactly once: {rs.describe_payment(got)}; {ctx}")
        assert len(ws.paid_transitions(c, deals["refunded"])) == 1, ctx
        assert _stock(c) == (7, 1), (
            f"stock on_hand/reserved {_stock(c)}, expected (7, 1): 1 + 2 committed, 3 released, "
            f"1 still held: {ctx}")

        # Every event at Stripe is now in the inbox: its webhook is DUPLICATE, nothing moves.
        _redeliver_all(c, fake_stripe, pb, f"webhooks after the crash at {crash_point}")
        assert _stock(c) == (7, 1), ctx
        got, _ = rs.assert_agrees_with_stripe(c, fake_stripe, p.payment_id, ctx)
        assert got.amount_refunded == 300, ctx
    assert cs.wait_no_pending(d, 10) == 0


def test_one_reconcile_asks_stripe_about_a_bounded_number_of_open_checkouts(pay_daemon, fake_stripe, pb):
    """The cost of asking: Reconcile asks about 100 open checkouts at most, however many are open,
    and those it asked about wait out their backoff before a sweep asks about them again."""
    d = pay_daemon(env=_env(fake_stripe, PAYMENTSD_JANITOR_INTERVAL="3600", PAYMENTSD_ASK_STRIPE_AFTER="3600"))
    c = d.client(timeout=60)
    cs.set_stock(c, SKU, 1000)
    for n in range(130):
        _open(c, f"deal-cost-{n}", 1)
    route = "GET /v1/checkout/sessions/{session}"
    before = fake_stripe.request_count(route)
    _reconcile(c)
    asked = fake_stripe.request_count(route) - before
    assert asked == 100, f"one Reconcile asked Stripe about {asked} of 130 open checkouts, expected 100"
    events_calls = fake_stripe.request_count("GET /v1/events")
    assert events_calls <= 3, f"{events_calls} GET /v1/events for one start-up sweep and one Reconcile"
