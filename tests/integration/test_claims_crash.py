"""A crash at every crash point of CreateCheckout with claims and with subscriptions, then a
restart (guarantees 2, 3 and 6).

For each name `paymentsd crash-points` prints that starts with `create_checkout.`, and each
flavour:

- "claims": a payment-mode checkout holding names (and stock);
- "subscription": a subscription checkout of a customer, holding names too;

start the daemon with PAYMENTSD_CRASH_AT=<name>, make the call that reaches the point (the
process ends itself with status 137 there), start it again on the same database without the
variable (janitor every second), wait until no operation is pending, and check:

- no HELD claim without its CREATED payment, and every CREATED payment holds every name it
  asked for (GetClaim agrees); names nobody open or paid has are FREE;
- every open session at the fake is the checkout session of a CREATED payment, and every
  CREATED payment's session is open at the fake;
- at most one open subscription session per customer at the fake (and one CREATED
  subscription payment per customer);
- reserved stock equals the quantities of the CREATED payments; an unrelated open checkout
  (the bystander) is untouched;
- asking again (the caller's retry) opens or answers the deal's checkout, holding its names,
  and the invariants still hold.

Points whose name mentions "replace" run a REPLACE: `replaced_session_expired` on a deal that
already has an open checkout, `customer_session_replaced` (subscriptions only) from another
deal of a customer that has an open subscription checkout elsewhere; points with "reject" or
"fail" a Stripe 400 (for the crash run's call and for the resumed attempt).

The other crash points a claim goes through (cancel, a stored webhook, the janitor's expiry)
are run with claims at the end of the file.
"""

from __future__ import annotations

import subprocess
import time

import pytest

import checkout_support as cs
import claims_support as cl
import paymentsd_harness as h
import webhook_support as ws
from claims_support import ANNUAL, MONTHLY

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

SKU = "cc-sku"
ON_HAND = 10
DEAL = "deal-ccrash"
TAB1 = "deal-ccrash-tab1"          # the customer's other tab (customer_session_replaced)
BYSTANDER = "deal-ccrash-bystander"
CUST = "cust_crash"
BYSTANDER_CUST = "cust_bystander"
NEW_CLAIMS = ["slug:crash", "slug:new-only"]
OLD_CLAIMS = ["slug:crash", "slug:old-only"]
BYSTANDER_CLAIMS = ["slug:bystander"]
ALL_KEYS = sorted(set(NEW_CLAIMS + OLD_CLAIMS + BYSTANDER_CLAIMS))
FLAVOURS = ("claims", "subscription")


def _reachable(point: str, flavour: str) -> bool:
    # Only a subscription checkout replaces another deal's checkout (of the same customer).
    return not ("customer" in point and flavour != "subscription")


def pytest_generate_tests(metafunc):
    if "crash_point" in metafunc.fixturenames and "flavour" in metafunc.fixturenames:
        names = [n for n in cs.crash_points() if n.startswith("create_checkout.")]
        combos = [(n, f) for n in names for f in FLAVOURS if _reachable(n, f)]
        metafunc.parametrize(("crash_point", "flavour"), combos or [("<none listed>", "claims")])


def test_new_crash_point_is_listed(paymentsd_bin):
    res = subprocess.run([str(paymentsd_bin), "crash-points"], capture_output=True, text=True,
                         timeout=20)
    names = [l.strip() for l in res.stdout.splitlines() if l.strip()]
    assert "create_checkout.customer_session_replaced" in names, (
        f"crash point create_checkout.customer_session_replaced is not listed: {names}")


# ---------------------------------------------------------------------------


def _request(pb, flavour: str, deal: str, claims, on_open, prices=(ANNUAL,), qty: int = 3):
    if flavour == "subscription":
        return cl.sub_request(deal, CUST, list(prices), claims=claims, on_open=on_open)
    return cl.checkout(deal, claims, sku=SKU, quantity=qty, on_open=on_open)


def _bystander_request(pb, flavour: str):
    if flavour == "subscription":
        return cl.sub_request(BYSTANDER, BYSTANDER_CUST, [MONTHLY], claims=BYSTANDER_CLAIMS)
    return cl.checkout(BYSTANDER, BYSTANDER_CLAIMS, sku=SKU, quantity=1)


def _all_payments(d, c, pb) -> list:
    """Every payment, deal by deal through ListPayments (the deals read from the database)."""
    deals = list(dict.fromkeys(p["deal_id"] for p in cl.payment_rows(d)))
    out = []
    for deal in deals:
        out.extend(cs.list_payments(c, deal))
    return out


def _summary(payments) -> list:
    return [(p.deal_id, p.payment_id[-6:], cl.pay_status(p.status), list(p.claims),
             (p.checkout_session_id or "-")[-6:]) for p in payments]


def check_invariants(d: h.Daemon, fake: cs.FakeStripeHandle, pb, ctx: str, flavour: str):
    """Every invariant of the module docstring; returns the payments of the test's deals."""
    bad = cl.claim_invariant_violations(d) + cl.session_invariant_violations(d, fake)
    assert not bad, f"{ctx}:\n  " + "\n  ".join(bad)
    sessions = {s["id"]: s for s in fake.sessions()}
    with d.client(timeout=30) as c:
        payments = _all_payments(d, c, pb)
        ctx = f"{ctx}; payments {_summary(payments)}"
        created = [p for p in payments if p.status == pb.PAYMENT_STATUS_CREATED]
        paid = [p for p in payments if p.status == pb.PAYMENT_STATUS_PAID]
        for p in created:
            s = sessions.get(p.checkout_session_id)
            assert p.checkout_session_id and s is not None and s["status"] == "open", (
                f"CREATED payment {p.payment_id} ({p.deal_id}) without an open session "
                f"({s and s['status']}): {ctx}")
        # GetClaim agrees: names of open checkouts HELD by their deal, the rest FREE.
        holders = {k: (p.deal_id, "HELD") for p in created for k in p.claims}
        holders.update({k: (p.deal_id, "TAKEN") for p in paid for k in p.claims})
        for key in ALL_KEYS:
            deal, state = holders.get(key, ("", "FREE"))
            cl.expect_claim(c, key, state, deal, what=ctx)
        for p in created:
            got = cl.get_claim(c, p.claims[0]) if p.claims else None
            if got is not None:
                assert got.expires_at == p.expires_at, (
                    f"HELD {p.claims[0]} expires_at {got.expires_at} != its checkout's "
                    f"{p.expires_at}: {ctx}")
        if flavour == "claims":
            st = cs.get_stock(c, SKU)
            qty = lambda ps: sum(i.quantity for p in ps for i in p.items if i.sku == SKU)  # noqa: E731
            want = (ON_HAND - qty(paid), qty(created))
            assert (st.on_hand, st.reserved) == want, (
                f"stock on_hand/reserved {st.on_hand}/{st.reserved}, expected "
                f"{want[0]}/{want[1]} (sold {qty(paid)}, open {qty(created)}): {ctx}")
        by = [p for p in payments if p.deal_id == BYSTANDER]
        assert len(by) == 1 and by[0].status == pb.PAYMENT_STATUS_CREATED, (
            f"the bystander's checkout changed: {ctx}")
        assert sessions[by[0].checkout_session_id]["status"] == "open", f"bystander: {ctx}"
        cl.expect_claim(c, BYSTANDER_CLAIMS[0], "HELD", BYSTANDER, what=f"bystander; {ctx}")
    # One Idempotency-Key per payment's session create, however often it was sent.
    keys: dict[str, set] = {}
    for r in fake.requests(cs.SESSIONS_ROUTE):
        pid = ((r.get("params") or {}).get("metadata") or {}).get("payment_id", "?")
        keys.setdefault(pid, set()).add(r["idempotency_key"])
    multi = {k: v for k, v in keys.items() if len(v) > 1}
    assert not multi, f"a payment's session was created with several keys {multi}: {ctx}"
    if flavour == "subscription":
        most, timeline = cl.max_open_per_customer_in_log(fake, CUST)
        assert most <= 1, f"{most} sessions of {CUST} open at once at the fake {timeline}: {ctx}"
    return payments


@pytest.mark.test_timeout(120)
def test_crash_and_restart_with_claims(make_daemon, fake_stripe, pb, crash_point, flavour):
    assert crash_point != "<none listed>", "`paymentsd crash-points` lists no create_checkout.*"
    own_replace = "replace" in crash_point and "customer" not in crash_point
    other_tab = "customer" in crash_point
    env = {"STRIPE_API_BASE": fake_stripe.url, "PAYMENTSD_JANITOR_INTERVAL": "1"}
    d = make_daemon(env=env)

    # 1. Set up without the crash point.
    d.start()
    old = None
    with d.client(timeout=30) as c:
        cs.set_stock(c, SKU, ON_HAND)
        cs.create_ok(c, _bystander_request(pb, flavour), "the bystander")
        if own_replace:
            old = cs.create_ok(c, _request(pb, flavour, DEAL, OLD_CLAIMS, None, prices=[MONTHLY],
                                           qty=2), "the deal's first checkout")
        if other_tab:
            old = cs.create_ok(c, _request(pb, flavour, TAB1, OLD_CLAIMS, None, prices=[MONTHLY]),
                               "the customer's other tab")
    assert d.stop() == 0

    # 2. The crash run.
    if "reject" in crash_point or "fail" in crash_point:
        fake_stripe.add_fault(kind="status", status=400, times=2,
                              error={"code": "parameter_invalid_integer", "message": "rejected"})
    on_open = pb.ON_OPEN_REPLACE if (own_replace or other_tab) else pb.ON_OPEN_RETURN_EXISTING
    req = _request(pb, flavour, DEAL, NEW_CLAIMS, on_open)
    answer = cs.crash_run(d, crash_point, lambda c: c.call("CreateCheckout", req, timeout=30)[0])

    # 3. Restart on the same database; wait until nothing is pending.
    d.start()
    pending = cs.wait_no_pending(d, timeout=20)
    assert pending == 0, f"after a crash at {crash_point}, {pending} operation(s) still pending"
    ctx = f"crash at {crash_point} ({flavour}; the call answered: {answer})"
    payments = check_invariants(d, fake_stripe, pb, ctx, flavour)
    print(f"\n[{crash_point} / {flavour}] {_summary(payments)}")
    mine = [p for p in payments if p.deal_id == DEAL]
    allowed = {pb.PAYMENT_STATUS_CREATED, pb.PAYMENT_STATUS_FAILED}
    if own_replace:
        allowed.add(pb.PAYMENT_STATUS_CANCELED)
    for p in mine:
        assert p.status in allowed, f"{p.payment_id} is {cl.pay_status(p.status)}: {ctx} {_summary(payments)}"
    assert sum(p.status == pb.PAYMENT_STATUS_CREATED for p in mine) <= 1
    if old is not None:
        now_old = next(p for p in payments if p.payment_id == old.payment_id)
        assert now_old.status in (pb.PAYMENT_STATUS_CREATED, pb.PAYMENT_STATUS_CANCELED), (
            f"the replaced checkout is {cl.pay_status(now_old.status)}: {ctx}")
        if now_old.status == pb.PAYMENT_STATUS_CANCELED:
            assert fake_stripe.session(old.checkout_session_id)["status"] == "expired", (
                f"the replaced checkout is CANCELED but its session is not expired: {ctx}")

    # 4. The caller asks again: the deal gets its checkout, holding its names.
    with d.client(timeout=30) as c:
        before = {p.payment_id: p.status for p in mine}
        again = cs.create_ok(c, req, f"again after {crash_point}")
        assert again.deal_id == DEAL and again.status == pb.PAYMENT_STATUS_CREATED, (
            f"the retry answered {again.deal_id} {cl.pay_status(again.status)}: {ctx}")
        if before.get(again.payment_id) == pb.PAYMENT_STATUS_CREATED and on_open != pb.ON_OPEN_REPLACE:
            assert again.created is False, f"the retry re-created the open checkout: {ctx}"
        assert list(again.claims) == NEW_CLAIMS, f"the retry's claims {list(again.claims)}: {ctx}"
        for key in NEW_CLAIMS:
            cl.expect_claim(c, key, "HELD", DEAL, expires_at=again.expires_at, what=f"retry; {ctx}")
        cl.expect_claim(c, "slug:old-only", "FREE", "", what=f"retry; {ctx}")
        if old is not None:
            assert cs.get_payment(c, payment_id=old.payment_id).status == pb.PAYMENT_STATUS_CANCELED
    assert cs.wait_no_pending(d, timeout=20) == 0
    final = check_invariants(d, fake_stripe, pb, f"{ctx}, after the retry", flavour)
    assert sum(p.deal_id == DEAL and p.status == pb.PAYMENT_STATUS_CREATED for p in final) == 1
    if flavour == "subscription":
        opened = [s for s in cl.open_sessions(fake_stripe) if cl.session_customer(s) == CUST]
        assert [s["id"] for s in opened] == [again.checkout_session_id], (
            f"the customer's open sessions at the fake: {[s['id'][-6:] for s in opened]}: {ctx}")
    text = d.stderr_text()
    for secret in h.SECRETS:
        assert secret not in text, f"secret {secret[:6]}... in stderr"


# ---------------------------------------------------------------------------
# Other crash points a claim goes through


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("crash_point", ["cancel_checkout.session_expired", "stripe_event.stored",
                                         "confirm_checkout.session_retrieved"])
def test_claims_survive_a_crash_in_cancel_and_fulfilment(make_daemon, fake_stripe, pb,
                                                         crash_point):
    env = {"STRIPE_API_BASE": fake_stripe.url, "PAYMENTSD_JANITOR_INTERVAL": "1"}
    d = make_daemon(env=env)
    d.start()
    with d.client(timeout=30) as c:
        cs.set_stock(c, SKU, ON_HAND)
        cs.create_ok(c, _bystander_request(pb, "claims"))
        pay = cs.create_ok(c, cl.checkout(DEAL, NEW_CLAIMS, sku=SKU, quantity=3))
    assert d.stop() == 0
    cancel = crash_point.startswith("cancel")
    if not cancel:
        fake_stripe.complete_session(pay.checkout_session_id, paid=True)
    body, sig = ((b"", "") if cancel else
                 ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED))

    def call(c):
        if cancel:
            return ws.cancel(c, DEAL, reason="crash test", timeout=30)[0]
        if crash_point == "stripe_event.stored":
            return ws.deliver(c, body, sig, timeout=30)[0]
        return ws.confirm(c, deal_id=DEAL, timeout=30)[0]

    answer = cs.crash_run(d, crash_point, call, events_down=fake_stripe)
    d.start()
    assert cs.wait_no_pending(d, timeout=20) == 0
    ctx = f"crash at {crash_point} with claims (the call answered: {answer})"
    if cancel:
        got = ws.wait_payment_status(d, DEAL, pb.PAYMENT_STATUS_CANCELED, timeout=15)
        assert got.status == pb.PAYMENT_STATUS_CANCELED, f"the cancel was not finished: {ctx}"
    elif crash_point == "stripe_event.stored":
        got = ws.wait_payment_status(d, DEAL, pb.PAYMENT_STATUS_PAID, timeout=15)
        assert got.status == pb.PAYMENT_STATUS_PAID, f"the stored event was not applied: {ctx}"
    else:
        with d.client(timeout=30) as c:
            status, _ = ws.confirm(c, deal_id=DEAL, timeout=30)
            assert status.code == pb.OK, f"ConfirmCheckout retry: {h.describe_status(status)}"
    payments = check_invariants(d, fake_stripe, pb, ctx, "claims")
    mine = [p for p in payments if p.deal_id == DEAL]
    want_state = "FREE" if cancel else "TAKEN"
    with d.client(timeout=30) as c:
        for key in NEW_CLAIMS:
            cl.expect_claim(c, key, want_state, "" if cancel else DEAL, what=ctx)
        if not cancel:
            ws.deliver_ok(c, body, sig, "the webhook (again) after the restart")
            assert len(ws.paid_transitions(c, DEAL)) == 1, f"paid more than once: {ctx}"
            rows = sorted((k, s) for k, _, dl, s, _ in cl.claim_rows(d) if dl == DEAL)
            assert rows == sorted((k, "TAKEN") for k in NEW_CLAIMS), f"claim rows {rows}: {ctx}"
    assert len(mine) == 1, f"{_summary(mine)}: {ctx}"
    check_invariants(d, fake_stripe, pb, f"{ctx}, at the end", "claims")


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_crash_in_the_janitors_expiry_releases_the_names(make_daemon, fake_stripe, pb, flavour):
    """janitor.session_expired: the janitor expired an overdue checkout at Stripe and died
    before releasing it. After the restart the release is finished: the names are FREE and
    another deal (another customer's tab, for subscriptions) can have them. The daemon's clock
    cannot be moved, so the checkout's expires_at is moved into the past in the database while
    the daemon is stopped."""
    point = "janitor.session_expired"
    if point not in cs.crash_points():
        pytest.fail(f"crash point {point} is not listed")
    env = {"STRIPE_API_BASE": fake_stripe.url, "PAYMENTSD_JANITOR_INTERVAL": "1"}
    d = make_daemon(env=env)
    d.start()
    with d.client(timeout=30) as c:
        cs.set_stock(c, SKU, ON_HAND)
        cs.create_ok(c, _bystander_request(pb, flavour))
        pay = cs.create_ok(c, _request(pb, flavour, DEAL, NEW_CLAIMS, None))
    assert d.stop() == 0
    assert d.db_execute("UPDATE payments SET expires_at = ? WHERE payment_id = ?",
                        int(time.time()) - 3600, pay.payment_id) == 1, "test setup"

    # The crash run: the janitor's first sweep (at start-up) reaches the point by itself.
    d.env["PAYMENTSD_CRASH_AT"] = point
    d.start(wait=False)
    try:
        rc = d.proc.wait(30)
    except subprocess.TimeoutExpired:
        rc = None
    assert rc in (137, -9), f"the janitor did not stop at {point}: exit status {rc}"
    assert f"crash point reached: {point}" in d.stderr_text()
    del d.env["PAYMENTSD_CRASH_AT"]
    assert fake_stripe.session(pay.checkout_session_id)["status"] == "expired", (
        "test setup: the janitor had not expired the session at Stripe before the crash")

    d.start()
    assert cs.wait_no_pending(d, timeout=20) == 0
    got = ws.wait_payment_status(d, DEAL, pb.PAYMENT_STATUS_EXPIRED, timeout=15)
    ctx = f"crash at {point} ({flavour})"
    assert got.status == pb.PAYMENT_STATUS_EXPIRED, (
        f"after the restart the overdue checkout is {cl.pay_status(got.status)}: {ctx}")
    check_invariants(d, fake_stripe, pb, ctx, flavour)
    with d.client(timeout=30) as c:
        for key in NEW_CLAIMS:
            cl.expect_claim(c, key, "FREE", "", what=ctx)
        nxt = cs.create_ok(c, _request(pb, flavour, "deal-after-janitor", NEW_CLAIMS,
                                       pb.ON_OPEN_REJECT), f"a new deal after {point}")
        assert nxt.created
    check_invariants(d, fake_stripe, pb, f"{ctx}, after a new deal took the names", flavour)
