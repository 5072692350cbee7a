"""A crash at every crash point of CreateCheckout, then a restart (guarantee 3).

For each name `paymentsd crash-points` prints that starts with
`create_checkout.`: start the daemon with PAYMENTSD_CRASH_AT=<name>, call
CreateCheckout (the process ends itself with status 137 at the point), start
it again on the same database and socket without the variable, wait until
no operation is pending, then check:

- the deal's payment is CREATED with a session that is open at the fake, or
  FAILED with no session of the deal open at the fake;
- every open session at the fake belongs to a CREATED payment of the daemon
  (never an open session the database does not know or no longer wants);
- all session creates for one payment carried one Idempotency-Key;
- reserved stock equals the quantities of the CREATED payments;
- CreateCheckout again returns that open payment (created=false), or opens
  a new one if the deal's payment FAILED.

Points whose name mentions "replace" are reached by a REPLACE call on a deal
that already has an open checkout; points whose name mentions "reject" or
"fail" by a Stripe 400 (a scripted fault for the crash run's call and for the
resumed attempt after the restart).
"""

from __future__ import annotations

import subprocess

import pytest

import checkout_support as cs
import paymentsd_harness as h
from checkout_support import checkout_request, item

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

REQUIRED = ("create_checkout.payment_recorded", "create_checkout.session_created",
            "create_checkout.session_recorded")
SKU = "crash-sku"
ON_HAND = 10
DEAL = "deal-crash"


def pytest_generate_tests(metafunc):
    if "crash_point" in metafunc.fixturenames:
        # The customer's crash point needs two deals of one subscriber: test_claims_crash.py has it.
        names = [n for n in cs.crash_points()
                 if n.startswith("create_checkout.") and n != "create_checkout.customer_session_replaced"]
        metafunc.parametrize("crash_point", names or ["<none listed>"])


def test_crash_points_are_listed(paymentsd_bin):
    res = subprocess.run([str(paymentsd_bin), "crash-points"], capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 0, f"paymentsd crash-points exited {res.returncode}: {res.stderr}"
    names = [l.strip() for l in res.stdout.splitlines() if l.strip()]
    assert len(names) == len(set(names)), f"duplicate crash point names: {names}"
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"crash points missing: {missing}; listed: {names}"


def _is_replace(name: str) -> bool:
    return "replace" in name


def _needs_rejection(name: str) -> bool:
    return "reject" in name or "fail" in name


@pytest.mark.test_timeout(90)
def test_crash_and_restart(make_daemon, fake_stripe, pb, crash_point):
    assert crash_point != "<none listed>", (
        "`paymentsd crash-points` lists no create_checkout.* names")
    replace = _is_replace(crash_point)
    env = {"STRIPE_API_BASE": fake_stripe.url, "PAYMENTSD_JANITOR_INTERVAL": "1"}
    d = make_daemon(env=env)

    # 1. Set up without the crash point: stock, and for REPLACE an open checkout.
    d.start()
    first = None
    with d.client(timeout=30) as c:
        cs.set_stock(c, SKU, ON_HAND)
        if replace:
            first = cs.create_ok(c, checkout_request(DEAL, [item(SKU, 2, 1000)]))
    assert d.stop() == 0

    # 2. The crash run.
    if _needs_rejection(crash_point):
        # Twice: the crash run's call, then the resumed attempt after the restart, so
        # that the payment ends FAILED (a rejection is not stored under Stripe's key).
        fake_stripe.add_fault(kind="status", status=400, times=2,
                              error={"code": "parameter_invalid_integer", "message": "rejected"})
    qty = 3
    req = checkout_request(DEAL, [item(SKU, qty, 1000)],
                           on_open=pb.ON_OPEN_REPLACE if replace else pb.ON_OPEN_RETURN_EXISTING)
    answer = cs.crash_run(d, crash_point, lambda c: c.call("CreateCheckout", req, timeout=30)[0])

    # 3. Restart on the same database and socket; wait until nothing is pending.
    d.start()
    pending = cs.wait_no_pending(d, timeout=20)
    assert pending == 0, (
        f"after a crash at {crash_point} and a restart, {pending} operation(s) still pending "
        f"after 20 s")

    with d.client(timeout=30) as c:
        payments = cs.list_payments(c, DEAL)
        latest = cs.get_payment(c, deal_id=DEAL)
        stock = cs.get_stock(c, SKU)
    summary = [(p.payment_id, cs.status_name(p.status), p.checkout_session_id) for p in payments]
    sessions = fake_stripe.sessions()
    by_id = {s["id"]: s for s in sessions}
    open_ids = {s["id"] for s in sessions if s["status"] == "open"}
    ctx = (f"crash at {crash_point} (the call answered: {answer}); payments {summary}; "
           f"fake sessions {[(s['id'][-8:], s['status'], cs.session_deal(s)) for s in sessions]}")

    print(f"\n[{crash_point}] {ctx}")  # shown with -s or on failure
    assert payments, f"no payment for the deal: {ctx}"
    assert latest.payment_id == payments[-1].payment_id, f"GetPayment is not the latest: {ctx}"
    created = [p for p in payments if p.status == pb.PAYMENT_STATUS_CREATED]
    assert len(created) <= 1, f"more than one CREATED payment: {ctx}"
    allowed = {pb.PAYMENT_STATUS_CREATED, pb.PAYMENT_STATUS_FAILED}
    if replace:
        allowed.add(pb.PAYMENT_STATUS_CANCELED)
    for p in payments:
        assert p.status in allowed, f"payment {p.payment_id} is {cs.status_name(p.status)}: {ctx}"
    if not replace:
        assert len(payments) == 1, f"one CreateCheckout made {len(payments)} payments: {ctx}"

    # A CREATED payment has its session, open at Stripe.
    for p in created:
        assert p.checkout_session_id, f"CREATED payment without a session: {ctx}"
        s = by_id.get(p.checkout_session_id)
        assert s is not None, f"the payment's session is unknown to the fake: {ctx}"
        assert s["status"] == "open", f"the CREATED payment's session is {s['status']}: {ctx}"
    # Every open session at the fake belongs to a CREATED payment.
    wanted = {p.checkout_session_id for p in created}
    stray = open_ids - wanted
    assert not stray, f"open session(s) at Stripe the daemon does not want: {sorted(stray)}; {ctx}"
    if latest.status == pb.PAYMENT_STATUS_FAILED:
        deal_open = [s["id"] for s in sessions
                     if s["status"] == "open" and cs.session_deal(s) == DEAL]
        assert not deal_open, f"the payment FAILED but the deal has open sessions: {ctx}"
    # One Idempotency-Key per payment's session create, however often it was sent.
    keys_by_payment: dict[str, set] = {}
    for r in fake_stripe.requests(cs.SESSIONS_ROUTE):
        pid = ((r.get("params") or {}).get("metadata") or {}).get("payment_id", "?")
        keys_by_payment.setdefault(pid, set()).add(r["idempotency_key"])
    multi = {k: v for k, v in keys_by_payment.items() if len(v) > 1}
    assert not multi, f"a payment's session was created with several keys {multi}: {ctx}"
    # Reservations match the open payments.
    want_reserved = sum(i.quantity for p in created for i in p.items if i.sku == SKU)
    assert (stock.on_hand, stock.reserved) == (ON_HAND, want_reserved), (
        f"stock on_hand/reserved {stock.on_hand}/{stock.reserved}, expected "
        f"{ON_HAND}/{want_reserved}: {ctx}")
    if replace and first is not None:
        old = next(p for p in payments if p.payment_id == first.payment_id)
        if old.status == pb.PAYMENT_STATUS_CANCELED:
            assert by_id[first.checkout_session_id]["status"] != "open", (
                f"the replaced payment is CANCELED but its session is still open: {ctx}")

    # 4. CreateCheckout again: the open payment back, or a new one after FAILED.
    with d.client(timeout=30) as c:
        if created:
            open_pay = created[0]
            again_req = checkout_request(DEAL, list(open_pay.items))
            again = cs.create_ok(c, again_req, f"again after {crash_point}")
            assert again.payment_id == open_pay.payment_id and again.created is False, (
                f"repeat returned {again.payment_id} created={again.created}, expected "
                f"{open_pay.payment_id} created=false: {ctx}")
            assert again.checkout_session_id == open_pay.checkout_session_id
        else:
            again = cs.create_ok(c, checkout_request(DEAL, [item(SKU, qty, 1000)]),
                                 f"again after {crash_point}")
            assert again.created is True and again.payment_id not in {p.payment_id for p in payments}, (
                f"after a FAILED payment a new one must be opened: {ctx}")
            assert fake_stripe.session(again.checkout_session_id)["status"] == "open"
        final = cs.get_stock(c, SKU)
        final_created = [p for p in cs.list_payments(c, DEAL)
                         if p.status == pb.PAYMENT_STATUS_CREATED]
        assert final.reserved == sum(i.quantity for p in final_created for i in p.items
                                     if i.sku == SKU)
    text = d.stderr_text()
    for secret in h.SECRETS:
        assert secret not in text, f"secret {secret[:6]}... in stderr"
