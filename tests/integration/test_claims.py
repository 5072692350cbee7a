"""Unique names before money (guarantee 6 of behaviour.md): claims.

A checkout may hold unique names (`claims`, e.g. `slug:alice`) for its deal.
They are held in the transaction that records the CREATED payment and
reserves its stock, before Stripe is called; a name another deal holds or
has taken is refused with ALREADY_EXISTS `claim_taken` (details key) and
nothing is reserved and no session requested. A hold lives as long as its
checkout: released when the checkout expires (after Stripe confirmed it), is
cancelled, replaced or fails; TAKEN when the payment is paid. A payment that
arrives late for a name another deal has meanwhile is refunded in full, with
no order. GetClaim says FREE/HELD/TAKEN; ReleaseClaim (admin) frees a TAKEN
name.

The database side is checked too: the partial UNIQUE index on claims(key)
over HELD and TAKEN rows is what enforces one holder, whatever the code
above it does.
"""

from __future__ import annotations

import os
import shutil
import stat
import time

import pytest

import checkout_support as cs
import claims_support as cl
import paymentsd_harness as h
import webhook_support as ws
from checkout_support import create_ok, expect_error

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

SKU = "claim-sku"
QUIET = {"PAYMENTSD_JANITOR_INTERVAL": "3600"}


def _stock(c, sku=SKU):
    st = cs.get_stock(c, sku)
    return st.on_hand, st.reserved


def _no_violations(d, what: str):
    bad = cl.claim_invariant_violations(d)
    assert not bad, f"{what}: claim invariants broken:\n  " + "\n  ".join(bad)


# ---------------------------------------------------------------------------
# Held with the checkout, taken at fulfilment; GetClaim


def test_claims_are_held_with_the_checkout_and_taken_when_paid(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 5)
    keys = ["slug:alice", "team:acme.io", "Az09_.:-"]
    pay = create_ok(c, cl.checkout("deal-hold", keys, quantity=2))
    assert pay.created and pay.status == pb.PAYMENT_STATUS_CREATED
    assert list(pay.claims) == keys, f"Payment.claims {list(pay.claims)}, asked for {keys}"
    assert _stock(c) == (5, 2), f"stock reserved with the claims: {_stock(c)}"
    for key in keys:
        cl.expect_claim(c, key, "HELD", "deal-hold", expires_at=pay.expires_at,
                        what="an open checkout's name")
    # A name nobody asked for is FREE, without deal or expiry.
    cl.expect_claim(c, "slug:nobody", "FREE", "", expires_at=0, what="an unknown name")
    by_id = cs.get_payment(c, payment_id=pay.payment_id)
    assert list(by_id.claims) == keys, f"GetPayment claims {list(by_id.claims)}"
    rows = [(k, s) for k, pid, _, s, _ in cl.claim_rows(d) if pid == pay.payment_id]
    assert sorted(rows) == sorted((k, "HELD") for k in keys), f"claims table rows: {rows}"

    # The same checkout again (same items and claims) is the same checkout.
    again = create_ok(c, cl.checkout("deal-hold", keys, quantity=2), "repeat with the same claims")
    assert (again.payment_id, again.created) == (pay.payment_id, False), (
        f"repeat answered {again.payment_id} created={again.created}")
    assert fake_stripe.counters()["sessions_created"] == 1

    # Paid: TAKEN by the deal, no expiry; the payment still lists them.
    res = cl.pay_by_webhook(c, fake_stripe, pay)
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED, ws.outcome_name(res.outcome)
    paid = cs.get_payment(c, deal_id="deal-hold")
    assert paid.status == pb.PAYMENT_STATUS_PAID and paid.order_id, cl.pay_status(paid.status)
    assert list(paid.claims) == keys, f"a paid payment's claims: {list(paid.claims)}"
    for key in keys:
        cl.expect_claim(c, key, "TAKEN", "deal-hold", expires_at=0, what="after payment")
    assert _stock(c) == (3, 0)
    _no_violations(d, "after fulfilment")


def test_different_claims_are_another_checkout(pay_daemon, fake_stripe, pb):
    """Claims are part of "the same checkout" for RETURN_EXISTING."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    first = create_ok(c, cl.checkout("deal-diffclaims", ["slug:one"]))
    for label, claims in (("another claim", ["slug:two"]), ("an extra claim", ["slug:one", "slug:two"]),
                          ("no claims", [])):
        status, _ = c.call("CreateCheckout", cl.checkout("deal-diffclaims", claims))
        expect_error(status, "ALREADY_EXISTS", "checkout_in_progress",
                     f"RETURN_EXISTING with {label}")
    assert fake_stripe.counters()["sessions_created"] == 1
    cl.expect_claim(c, "slug:one", "HELD", "deal-diffclaims")
    cl.expect_claim(c, "slug:two", "FREE", "", what="a name only a refused call asked for")
    assert cs.get_payment(c, deal_id="deal-diffclaims").payment_id == first.payment_id


def test_name_of_another_deal_is_refused_before_stripe(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    a = create_ok(c, cl.checkout("deal-a", ["slug:alice"], quantity=2))
    before = fake_stripe.request_count()
    # The free name first, the held one second: the whole call is refused and rolled back.
    for on_open in (pb.ON_OPEN_RETURN_EXISTING, pb.ON_OPEN_REPLACE, pb.ON_OPEN_REJECT):
        status, _ = c.call("CreateCheckout", cl.checkout("deal-b", ["slug:bob", "slug:alice"],
                                                         quantity=3, on_open=on_open))
        expect_error(status, "ALREADY_EXISTS", "claim_taken",
                     f"a name another deal holds (on_open={pb.OnOpen.Name(on_open)})",
                     key="slug:alice")
    assert fake_stripe.request_count() == before, (
        "a refused claim reached Stripe: "
        f"{fake_stripe.request_count() - before} session create(s) after claim_taken")
    assert _stock(c) == (10, 2), f"claim_taken must reserve nothing: {_stock(c)}"
    cl.expect_claim(c, "slug:bob", "FREE", "", what="the free name of a refused call")
    cl.expect_claim(c, "slug:alice", "HELD", "deal-a", expires_at=a.expires_at)
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="deal-b"))
    expect_error(status, "NOT_FOUND", "deal_not_found", "the refused deal has no payment")
    assert [r for r in cl.claim_rows(d) if r[2] == "deal-b"] == [], "rows left for the refused deal"

    # Taken (paid) by A: still refused for everybody else.
    cl.pay_by_webhook(c, fake_stripe, a)
    cl.expect_claim(c, "slug:alice", "TAKEN", "deal-a")
    status, _ = c.call("CreateCheckout", cl.checkout("deal-c", ["slug:alice"]))
    expect_error(status, "ALREADY_EXISTS", "claim_taken", "a name another deal has taken",
                 key="slug:alice")
    assert fake_stripe.request_count() == before
    assert _stock(c) == (8, 0), f"after A paid: {_stock(c)}"
    _no_violations(d, "after refusals")


def test_refused_claim_keeps_the_deals_open_checkout(pay_daemon, fake_stripe, pb):
    """Deal B has an open checkout and asks (REPLACE) for a name deal A holds: claim_taken,
    decided before anything is closed, so B's open checkout stays as it was, session and names."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    create_ok(c, cl.checkout("deal-holder", ["slug:zed"]))
    old_b = create_ok(c, cl.checkout("deal-b-open", ["slug:bee"]))
    expires_before = fake_stripe.request_count("POST /v1/checkout/sessions/{session}/expire")
    status, _ = c.call("CreateCheckout", cl.checkout("deal-b-open", ["slug:zed"],
                                                     on_open=pb.ON_OPEN_REPLACE))
    expect_error(status, "ALREADY_EXISTS", "claim_taken", "REPLACE asking for a held name",
                 key="slug:zed")
    now_b = cs.get_payment(c, payment_id=old_b.payment_id)
    assert now_b.status == pb.PAYMENT_STATUS_CREATED, (
        f"a refused REPLACE closed B's open checkout: {cl.pay_status(now_b.status)}")
    assert fake_stripe.session(old_b.checkout_session_id)["status"] == "open", "B's session was expired"
    assert fake_stripe.request_count("POST /v1/checkout/sessions/{session}/expire") == expires_before
    cl.expect_claim(c, "slug:bee", "HELD", "deal-b-open")
    cl.expect_claim(c, "slug:zed", "HELD", "deal-holder")
    _no_violations(d, "after the refused REPLACE")
    assert not cl.session_invariant_violations(d, fake_stripe)


# ---------------------------------------------------------------------------
# Two deals race for one name

ROUNDS = 30


@pytest.mark.test_timeout(150)
def test_two_deals_race_for_a_name(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    with d.client(timeout=30) as c:
        cs.set_stock(c, SKU, 10_000)
    tally = {0: 0, 1: 0}
    for rnd in range(ROUNDS):
        key = f"slug:alice-{rnd}"
        deals = (f"race-{rnd}-a", f"race-{rnd}-b")
        sessions_before = fake_stripe.counters()["sessions_created"]
        posts_before = fake_stripe.request_count()

        def one(i):
            with h.Client(d.socket_path, timeout=30) as cc:
                return cl.create(cc, cl.checkout(deals[i], [key]), timeout_ms=20000, timeout=30)

        results = cs.run_concurrently(2, one, timeout=40)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"round {rnd}: {errors[0]!r}"
        ok = [i for i, (s, _) in enumerate(results) if s.code == pb.OK]
        answers = [h.describe_status(s) for s, _ in results]
        assert len(ok) == 1, f"round {rnd}: exactly one deal must get a checkout, got {answers}"
        winner, loser = ok[0], 1 - ok[0]
        tally[winner] += 1
        expect_error(results[loser][0], "ALREADY_EXISTS", "claim_taken",
                     f"round {rnd}: the other deal", key=key)
        pay = results[winner][1]
        assert pay.created and pay.deal_id == deals[winner] and list(pay.claims) == [key], (
            f"round {rnd}: winner's payment {pay.deal_id} created={pay.created} claims={pay.claims}")
        assert fake_stripe.counters()["sessions_created"] - sessions_before == 1, (
            f"round {rnd}: the fake made "
            f"{fake_stripe.counters()['sessions_created'] - sessions_before} sessions")
        assert fake_stripe.request_count() - posts_before == 1, (
            f"round {rnd}: {fake_stripe.request_count() - posts_before} session creates were sent")
        with h.Client(d.socket_path, timeout=30) as c:
            cl.expect_claim(c, key, "HELD", deals[winner], expires_at=pay.expires_at,
                            what=f"round {rnd}")
            status, _ = c.call("GetPayment", pb.PaymentRef(deal_id=deals[loser]))
            expect_error(status, "NOT_FOUND", "deal_not_found", f"round {rnd}: the loser's deal")
            assert cs.get_stock(c, SKU).reserved == rnd + 1, f"round {rnd}: reserved stock"
    print(f"\nwinners: first deal {tally[0]}, second deal {tally[1]}")
    _no_violations(d, "after the races")


@pytest.mark.test_timeout(90)
def test_many_deals_race_for_one_name(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    n = 12

    def one(i):
        with h.Client(d.socket_path, timeout=30) as cc:
            return cl.create(cc, cl.checkout(f"crowd-{i}", ["slug:popular", f"slug:own-{i}"]),
                             timeout_ms=25000, timeout=30)

    results = cs.run_concurrently(n, one, timeout=60)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{errors[0]!r}"
    ok = [i for i, (s, _) in enumerate(results) if s.code == pb.OK]
    assert len(ok) == 1, f"{len(ok)} of {n} deals got a checkout for one name: " + str(
        [h.describe_status(s) for s, _ in results])
    for i, (s, _) in enumerate(results):
        if i != ok[0]:
            expect_error(s, "ALREADY_EXISTS", "claim_taken", f"deal crowd-{i}", key="slug:popular")
    assert fake_stripe.counters()["sessions_created"] == 1
    with d.client(timeout=30) as c:
        cl.expect_claim(c, "slug:popular", "HELD", f"crowd-{ok[0]}")
        for i in range(n):
            want = ("HELD", f"crowd-{i}") if i == ok[0] else ("FREE", "")
            cl.expect_claim(c, f"slug:own-{i}", *want, what="the losers' other names stay free")
    _no_violations(d, "after the crowd")


# ---------------------------------------------------------------------------
# Released with the checkout


@pytest.mark.parametrize("how", ["expired_webhook", "cancel", "confirm_expired"])
def test_name_is_free_again_when_the_checkout_closes(pay_daemon, fake_stripe, pb, how):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 3)
    a = create_ok(c, cl.checkout("deal-first", ["slug:alice"], quantity=3))
    status, _ = c.call("CreateCheckout", cl.checkout("deal-second", ["slug:alice"]))
    expect_error(status, "ALREADY_EXISTS", "claim_taken", "while the first deal holds it",
                 key="slug:alice")

    if how == "expired_webhook":
        cl.expire_by_webhook(c, fake_stripe, a)
        want = pb.PAYMENT_STATUS_EXPIRED
    elif how == "cancel":
        status, _ = ws.cancel(c, "deal-first", reason="changed their mind")
        assert status.code == pb.OK, f"CancelCheckout: {h.describe_status(status)}"
        assert fake_stripe.session(a.checkout_session_id)["status"] == "expired"
        want = pb.PAYMENT_STATUS_CANCELED
    else:
        fake_stripe.expire_session_at_stripe(a.checkout_session_id)
        # Stripe expired it but nobody told the daemon yet: the hold stays until it knows.
        cl.expect_claim(c, "slug:alice", "HELD", "deal-first",
                        what="expired at Stripe, not yet known to the daemon")
        status, _ = ws.confirm(c, deal_id="deal-first")
        assert status.code == pb.OK, f"ConfirmCheckout: {h.describe_status(status)}"
        want = pb.PAYMENT_STATUS_EXPIRED
    got = cs.get_payment(c, deal_id="deal-first")
    assert got.status == want, f"{how}: the first payment is {cl.pay_status(got.status)}"
    cl.expect_claim(c, "slug:alice", "FREE", "", expires_at=0, what=f"after {how}")
    assert _stock(c) == (3, 0)
    _no_violations(d, f"after {how}")

    b = create_ok(c, cl.checkout("deal-second", ["slug:alice"], quantity=3),
                  f"the second deal after {how}")
    assert b.created and list(b.claims) == ["slug:alice"]
    cl.expect_claim(c, "slug:alice", "HELD", "deal-second", expires_at=b.expires_at)
    # The first deal cannot have it back now.
    status, _ = c.call("CreateCheckout", cl.checkout("deal-first", ["slug:alice"], quantity=3))
    expect_error(status, "ALREADY_EXISTS", "claim_taken", "the first deal again",
                 key="slug:alice")
    _no_violations(d, "at the end")


def test_name_is_free_again_after_the_janitor_expires_the_checkout(make_daemon, fake_stripe, pb):
    """The janitor expires a checkout past its time (Stripe first, then the release). The
    daemon's clock cannot be moved, so the test moves the checkout's expires_at into the past
    in the database while the daemon is stopped."""
    d = make_daemon(env={"STRIPE_API_BASE": fake_stripe.url, **QUIET})
    d.start()
    with d.client(timeout=30) as c:
        a = create_ok(c, cl.checkout("deal-janitor", ["slug:late-night"]))
        other = create_ok(c, cl.checkout("deal-janitor-other", ["slug:keeps"]))
    assert d.stop() == 0
    assert d.db_execute("UPDATE payments SET expires_at = ? WHERE payment_id = ?",
                        int(time.time()) - 3600, a.payment_id) == 1, "test setup"
    d.start()
    with d.client(timeout=30) as c:
        report = cs.call_ok(c, "Reconcile", pb.ReconcileRequest(), timeout=45)
        got = cs.get_payment(c, deal_id="deal-janitor")
        assert got.status == pb.PAYMENT_STATUS_EXPIRED, (
            f"the janitor's sweep (report {report}) left the overdue checkout "
            f"{cl.pay_status(got.status)}")
        assert fake_stripe.session(a.checkout_session_id)["status"] == "expired", (
            "the janitor released the hold without expiring the session at Stripe first")
        cl.expect_claim(c, "slug:late-night", "FREE", "", what="after the janitor's expiry")
        cl.expect_claim(c, "slug:keeps", "HELD", "deal-janitor-other",
                        expires_at=other.expires_at, what="a checkout still in its time")
        b = create_ok(c, cl.checkout("deal-janitor-next", ["slug:late-night"]))
        cl.expect_claim(c, "slug:late-night", "HELD", "deal-janitor-next", expires_at=b.expires_at)
    _no_violations(d, "after the janitor")


def test_replace_releases_the_old_names(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    old = create_ok(c, cl.checkout("deal-rep", ["slug:keep", "slug:drop"]))
    new = create_ok(c, cl.checkout("deal-rep", ["slug:keep", "slug:add"], quantity=2,
                                   on_open=pb.ON_OPEN_REPLACE), "REPLACE with other claims")
    assert new.created and new.payment_id != old.payment_id
    assert cs.get_payment(c, payment_id=old.payment_id).status == pb.PAYMENT_STATUS_CANCELED
    assert fake_stripe.session(old.checkout_session_id)["status"] == "expired"
    cl.expect_claim(c, "slug:drop", "FREE", "", what="a name only the replaced checkout had")
    cl.expect_claim(c, "slug:keep", "HELD", "deal-rep", expires_at=new.expires_at,
                    what="a name both checkouts asked for")
    cl.expect_claim(c, "slug:add", "HELD", "deal-rep", expires_at=new.expires_at)
    assert list(new.claims) == ["slug:keep", "slug:add"]
    assert list(cs.get_payment(c, payment_id=old.payment_id).claims) == ["slug:keep", "slug:drop"], (
        "the replaced payment still lists the names it asked for")
    create_ok(c, cl.checkout("deal-other", ["slug:drop"]), "another deal takes the dropped name")
    _no_violations(d, "after REPLACE")


def test_name_is_released_when_stripe_rejects_the_checkout(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 4)
    fake_stripe.add_fault(kind="status", status=400, times=1,
                          error={"code": "parameter_invalid_integer", "message": "rejected"})
    status, _ = c.call("CreateCheckout", cl.checkout("deal-rejected", ["slug:rej"], quantity=4),
                       timeout=30)
    expect_error(status, "FAILED_PRECONDITION", "stripe_rejected", "a Stripe 400")
    got = cs.get_payment(c, deal_id="deal-rejected")
    assert got.status == pb.PAYMENT_STATUS_FAILED, cl.pay_status(got.status)
    cl.expect_claim(c, "slug:rej", "FREE", "", what="after Stripe rejected the checkout")
    assert _stock(c) == (4, 0)
    create_ok(c, cl.checkout("deal-after-reject", ["slug:rej"], quantity=4))
    _no_violations(d, "after the rejection")


def test_name_is_released_when_the_async_payment_fails(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    a = create_ok(c, cl.checkout("deal-async", ["slug:sepa"]))
    fake_stripe.complete_session(a.checkout_session_id, paid=False)
    ws.deliver_ok(c, *ws.session_delivery(fake_stripe, a.checkout_session_id, ws.COMPLETED),
                  "completed, unpaid")
    cl.expect_claim(c, "slug:sepa", "HELD", "deal-async",
                    what="an async payment still settling keeps the name")
    fake_stripe.control("POST", f"/_fake/sessions/{a.checkout_session_id}/async_result",
                        {"succeeded": False})
    ws.deliver_ok(c, *ws.session_delivery(fake_stripe, a.checkout_session_id, ws.ASYNC_FAILED),
                  "async_payment_failed")
    got = cs.get_payment(c, deal_id="deal-async")
    assert got.status == pb.PAYMENT_STATUS_FAILED, (
        f"after async_payment_failed: {cl.pay_status(got.status)}")
    cl.expect_claim(c, "slug:sepa", "FREE", "", what="after the async payment failed")
    create_ok(c, cl.checkout("deal-async-next", ["slug:sepa"]))
    _no_violations(d, "after the failed payment")


def test_async_payment_success_takes_the_name(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    a = create_ok(c, cl.checkout("deal-async-ok", ["slug:slow-money"]))
    fake_stripe.complete_session(a.checkout_session_id, paid=False)
    fake_stripe.control("POST", f"/_fake/sessions/{a.checkout_session_id}/async_result",
                        {"succeeded": True})
    ws.deliver_ok(c, *ws.session_delivery(fake_stripe, a.checkout_session_id, ws.ASYNC_OK))
    cl.expect_claim(c, "slug:slow-money", "TAKEN", "deal-async-ok")


# ---------------------------------------------------------------------------
# Exactly once at fulfilment


@pytest.mark.test_timeout(90)
def test_name_taken_once_however_often_the_payment_completes(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    for rnd in range(6):
        deal, key = f"deal-twice-{rnd}", f"slug:twice-{rnd}"
        pay = create_ok(c, cl.checkout(deal, [key, f"{key}.extra"]))
        fake_stripe.complete_session(pay.checkout_session_id, paid=True)
        body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)
        forged = ws.forge(body, ws.COMPLETED)  # Stripe sending the news twice, as two events

        def one(i):
            with h.Client(d.socket_path, timeout=30) as cc:
                if i == 0:
                    return ws.confirm(cc, deal_id=deal, timeout=30)[0]
                payload = body if i in (1, 2) else forged
                return ws.deliver(cc, payload, ws.sign(payload) if i == 3 else sig, timeout=30)[0]

        results = cs.run_concurrently(4, one, timeout=40)
        bad = [r if isinstance(r, BaseException) else h.describe_status(r) for r in results
               if isinstance(r, BaseException) or r.code != pb.OK]
        assert not bad, f"round {rnd}: {bad}"
        ws.confirm(c, deal_id=deal)
        got = cs.get_payment(c, deal_id=deal)
        assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id, cl.pay_status(got.status)
        assert len(ws.paid_transitions(c, deal)) == 1, f"round {rnd}: paid more than once"
        rows = sorted((k, s) for k, _, dl, s, _ in cl.claim_rows(d) if dl == deal)
        assert rows == [(key, "TAKEN"), (f"{key}.extra", "TAKEN")], (
            f"round {rnd}: the deal's claim rows {rows}; expected one TAKEN row per name")
        cl.expect_claim(c, key, "TAKEN", deal, expires_at=0)
    _no_violations(d, "after the completions")


# ---------------------------------------------------------------------------
# Late payments


@pytest.mark.parametrize("closed_by", ["expired", "canceled"])
@pytest.mark.parametrize("other_has_it", ["held", "taken"])
def test_late_payment_for_a_name_another_deal_got_is_refunded(pay_daemon, fake_stripe, pb,
                                                               closed_by, other_has_it):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    key = "slug:alice"
    cs.set_stock(c, SKU, 10)
    first = create_ok(c, cl.checkout("deal-late-first", [key], quantity=2, unit_amount=1250))
    if closed_by == "expired":
        cl.expire_by_webhook(c, fake_stripe, first)
        closed = pb.PAYMENT_STATUS_EXPIRED
    else:
        status, _ = ws.cancel(c, "deal-late-first", reason="too slow")
        assert status.code == pb.OK, h.describe_status(status)
        closed = pb.PAYMENT_STATUS_CANCELED
    cl.expect_claim(c, key, "FREE", "", what=f"after the first checkout {closed_by}")

    second = create_ok(c, cl.checkout("deal-late-second", [key]))
    if other_has_it == "taken":
        cl.pay_by_webhook(c, fake_stripe, second)
    want_state = "TAKEN" if other_has_it == "taken" else "HELD"
    cl.expect_claim(c, key, want_state, "deal-late-second")
    stock_before = _stock(c)

    res = cl.pay_late(c, fake_stripe, first)
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED, ws.outcome_name(res.outcome)
    events = cl.wait_for_audit(d, "deal-late-first", "payment.late_refunded")
    got = cs.get_payment(c, payment_id=first.payment_id)
    intent = fake_stripe.session(first.checkout_session_id)["payment_intent"]
    ctx = (f"late payment ({closed_by}, other deal {other_has_it}): {cl.pay_status(got.status)} "
           f"order={got.order_id!r} reason={got.failure_reason!r} refunded={got.amount_refunded} "
           f"refunds={[(r.amount, r.status) for r in got.refunds]} "
           f"audit={[(e.kind, e.detail) for e in events]}")
    assert got.status == closed, f"the late payment must stay {cl.pay_status(closed)}: {ctx}"
    assert not got.order_id, f"no order for a name another deal has: {ctx}"
    assert got.failure_reason == f"late_payment_refunded: claim_taken key={key}", (
        f"failure_reason must say why: {ctx}")
    assert got.payment_intent_id == intent, f"payment_intent_id: {ctx}"
    assert got.amount_total == 2500
    assert len(got.refunds) == 1, f"one refund expected: {ctx}"
    r = got.refunds[0]
    assert (r.amount, r.status) == (2500, pb.REFUND_STATUS_SUCCEEDED), f"the refund: {ctx}"
    assert got.amount_refunded == 2500, ctx
    kinds = [e.kind for e in events]
    assert "payment.late" in kinds and "payment.late_refunded" in kinds, (
        f"audit kinds {kinds} lack payment.late / payment.late_refunded")
    # At the fake: one full refund of this payment intent.
    at_fake = cl.fake_refunds(fake_stripe, intent)
    assert [(x["amount"], x["status"]) for x in at_fake] == [(2500, "succeeded")], (
        f"refunds at the fake for the late payment: {at_fake}")
    # The other deal keeps the name, the stock is untouched.
    cl.expect_claim(c, key, want_state, "deal-late-second", what="after the late payment")
    assert _stock(c) == stock_before, f"the late payment touched stock: {_stock(c)} vs {stock_before}"
    assert len(ws.paid_transitions(c, "deal-late-first")) == 0

    # The same event again: nothing more.
    refunds_sent = len(fake_stripe.requests(cl.REFUNDS_ROUTE))
    body, sig = ws.session_delivery(fake_stripe, first.checkout_session_id, ws.COMPLETED)
    again = ws.deliver_ok(c, body, sig, "the late event again")
    assert again.outcome == pb.EVENT_OUTCOME_DUPLICATE, ws.outcome_name(again.outcome)
    assert len(fake_stripe.requests(cl.REFUNDS_ROUTE)) == refunds_sent
    assert cs.wait_no_pending(d, 10) == 0
    _no_violations(d, "after the late payment")


def test_late_payment_with_the_name_still_free_is_fulfilled(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    first = create_ok(c, cl.checkout("deal-late-free", ["slug:still-free"]))
    cl.expire_by_webhook(c, fake_stripe, first)
    cl.expect_claim(c, "slug:still-free", "FREE", "")
    cl.pay_late(c, fake_stripe, first)
    got = cs.get_payment(c, payment_id=first.payment_id)
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id, (
        f"late payment with the name free: {cl.pay_status(got.status)} "
        f"reason={got.failure_reason!r}")
    cl.expect_claim(c, "slug:still-free", "TAKEN", "deal-late-free", expires_at=0)
    assert fake_stripe.requests(cl.REFUNDS_ROUTE) == [], "a fulfilled late payment was refunded"
    status, _ = c.call("CreateCheckout", cl.checkout("deal-late-after", ["slug:still-free"]))
    expect_error(status, "ALREADY_EXISTS", "claim_taken", "after the late fulfilment",
                 key="slug:still-free")
    _no_violations(d, "after the late fulfilment")


# ---------------------------------------------------------------------------
# GetClaim and ReleaseClaim


def test_release_claim(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    taken = create_ok(c, cl.checkout("deal-rel-taken", ["slug:taken"]))
    cl.pay_by_webhook(c, fake_stripe, taken)
    held = create_ok(c, cl.checkout("deal-rel-held", ["slug:held"]))

    # HELD: an open checkout's name cannot be released under it.
    status, _ = cl.release_claim(c, "slug:held")
    expect_error(status, "FAILED_PRECONDITION", "claim_held", "ReleaseClaim of a held name",
                 key="slug:held", deal_id="deal-rel-held")
    cl.expect_claim(c, "slug:held", "HELD", "deal-rel-held", expires_at=held.expires_at)
    # FREE: nothing to release.
    status, _ = cl.release_claim(c, "slug:never")
    expect_error(status, "NOT_FOUND", "claim_not_found", "ReleaseClaim of a free name")
    # Malformed keys.
    for bad in ("", "slug alice", "s" * 129, "slug/alice", "sl\u00fcg"):
        status, _ = cl.release_claim(c, bad)
        expect_error(status, "INVALID_ARGUMENT", "invalid_field", f"ReleaseClaim({bad!r})",
                     field="key")
        status, _ = c.call("GetClaim", pb.ClaimRef(key=bad))
        expect_error(status, "INVALID_ARGUMENT", "invalid_field", f"GetClaim({bad!r})",
                     field="key")

    # TAKEN: freed, on record for the deal that had it; the payment itself is untouched.
    status, claim = cl.release_claim(c, "slug:taken")
    assert status.code == pb.OK, f"ReleaseClaim of a taken name: {h.describe_status(status)}"
    assert (claim.key, cl.claim_state(claim.state), claim.deal_id, claim.expires_at) == (
        "slug:taken", "FREE", "", 0), f"ReleaseClaim answered {cl.describe_claim(claim)}"
    cl.expect_claim(c, "slug:taken", "FREE", "", expires_at=0, what="after ReleaseClaim")
    events = cs.list_events(c, "deal-rel-taken")
    released = [e for e in events if e.kind == "claim.released"]
    assert len(released) == 1, (
        f"expected one claim.released audit event on the deal: {[(e.kind, e.detail) for e in events]}")
    assert "slug:taken" in released[0].detail, f"the audit event does not name the key: {released[0]}"
    pay = cs.get_payment(c, deal_id="deal-rel-taken")
    assert pay.status == pb.PAYMENT_STATUS_PAID and pay.order_id == f"ord_{taken.payment_id[4:]}", (
        f"releasing the name changed the payment: {cl.pay_status(pay.status)} {pay.order_id!r}")
    # Released for real: another deal can have it now. Twice is claim_not_found.
    status, _ = cl.release_claim(c, "slug:taken")
    expect_error(status, "NOT_FOUND", "claim_not_found", "ReleaseClaim of a name just released")
    create_ok(c, cl.checkout("deal-rel-next", ["slug:taken"]), "a new deal after ReleaseClaim")
    cl.expect_claim(c, "slug:taken", "HELD", "deal-rel-next")
    _no_violations(d, "after ReleaseClaim")


def test_release_claim_with_an_idempotency_key(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    pay = create_ok(c, cl.checkout("deal-relkey", ["slug:keyed"]))
    cl.pay_by_webhook(c, fake_stripe, pay)
    s1, p1 = c.call("ReleaseClaim", pb.ClaimRef(key="slug:keyed"), idempotency_key="rel-1")
    assert s1.code == pb.OK, h.describe_status(s1)
    s2, p2 = c.call("ReleaseClaim", pb.ClaimRef(key="slug:keyed"), idempotency_key="rel-1")
    assert s2.code == pb.OK and p2 == p1, (
        f"a replay with the same key must answer the stored response, got {h.describe_status(s2)}")
    released = [e for e in cs.list_events(c, "deal-relkey") if e.kind == "claim.released"]
    assert len(released) == 1, f"the replay released again: {len(released)} audit events"
    s3, _ = c.call("ReleaseClaim", pb.ClaimRef(key="slug:other"), idempotency_key="rel-1")
    expect_error(s3, "INVALID_ARGUMENT", "idempotency_key_reused", "same key, another name")


# ---------------------------------------------------------------------------
# Validation


def _bad_claims():
    ok = ["slug:a"]
    return [
        ("21 claims", "claims", [f"slug:{i}" for i in range(21)]),
        ("a duplicate", "claims", ["slug:a", "slug:b", "slug:a"]),
        ("empty key", "claims[0]", [""]),
        ("space in the third key", "claims[2]", ok + ["slug:b", "slug c"]),
        ("129 chars", "claims[1]", ok + ["k" * 129]),
        ("slash", "claims[0]", ["slug/alice"]),
        ("non-ASCII", "claims[0]", ["slug:\u00e4lice"]),
        ("at sign", "claims[0]", ["alice@example.com"]),
    ]


def test_claims_validation(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    wrong = []
    for label, field, claims in _bad_claims():
        status, _ = c.call("CreateCheckout", cl.checkout("deal-badclaims", claims))
        got = h.status_details(status).get("field")
        if not (status.code == pb.INVALID_ARGUMENT and status.reason == "invalid_field"
                and got == field):
            wrong.append(f"  {label}: expected invalid_field field={field!r}, "
                         f"got {h.describe_status(status)}")
    assert not wrong, "claims validation:\n" + "\n".join(wrong)
    assert fake_stripe.call_counts() == {}, (
        f"refused requests reached the fake: {fake_stripe.call_counts()}")
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="deal-badclaims"))
    expect_error(status, "NOT_FOUND", "deal_not_found", "after only refused calls")
    assert cl.claim_rows(d) == [], f"refused calls left claim rows: {cl.claim_rows(d)}"

    # The limits are accepted: 20 claims, 128 chars, every allowed character.
    limits = [f"slug:{i}" for i in range(18)] + ["k" * 128, "Az09_.:-"]
    pay = create_ok(c, cl.checkout("deal-limits", limits), "20 claims at the limits")
    assert list(pay.claims) == limits
    for key in limits:
        cl.expect_claim(c, key, "HELD", "deal-limits")


# ---------------------------------------------------------------------------
# Who may call


def _reachable(d):
    os.chmod(d.workdir, 0o755)
    os.chown(d.socket_path, -1, h.NOBODY_GID)
    assert stat.S_IMODE(os.stat(d.socket_path).st_mode) == 0o660


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.parametrize("admin", [False, True])
def test_get_claim_for_callers_release_claim_for_admins(pay_daemon, fake_stripe, pb, admin):
    if not shutil.which("setpriv"):
        pytest.fail("setpriv (util-linux) is needed to act as another user")
    env = {"PAYMENTSD_ALLOW_GIDS": "nogroup", **QUIET}
    if admin:
        env["PAYMENTSD_ADMIN_GIDS"] = "65534"
    d = pay_daemon(env=env)
    _reachable(d)
    with d.client(timeout=30) as c:
        pay = create_ok(c, cl.checkout("deal-auth", ["slug:authz"]))
        cl.pay_by_webhook(c, fake_stripe, pay)
    out = h.call_as_user(d.socket_path, [
        h.make_request("GetClaim", pb.ClaimRef(key="slug:authz"), request_id=1),
        h.make_request("ReleaseClaim", pb.ClaimRef(key="slug:authz"), request_id=2),
    ])
    assert out[0] != "EOF" and out[0].status.code == pb.OK, (
        f"GetClaim by an allowed caller: {out[0] if out[0] == 'EOF' else h.describe_status(out[0].status)}")
    got = pb.Claim.FromString(out[0].payload)
    assert (cl.claim_state(got.state), got.deal_id) == ("TAKEN", "deal-auth"), cl.describe_claim(got)
    assert out[1] != "EOF"
    with d.client(timeout=30) as c:
        if admin:
            assert out[1].status.code == pb.OK, (
                f"ReleaseClaim by an admin-group caller: {h.describe_status(out[1].status)}")
            cl.expect_claim(c, "slug:authz", "FREE", "")
        else:
            expect_error(out[1].status, "PERMISSION_DENIED", "caller_not_allowed",
                         "ReleaseClaim by a caller outside the admin groups")
            cl.expect_claim(c, "slug:authz", "TAKEN", "deal-auth", what="after a refused release")


# ---------------------------------------------------------------------------
# The database enforces one holder per name


def test_database_enforces_one_holder_per_name(make_daemon, fake_stripe, pb, tmp_path):
    """The partial UNIQUE index over HELD and TAKEN rows refuses a second holder even when
    written behind the code's back (the daemon stopped; each write tried on a copy of the
    SQLite file, or in a PostgreSQL transaction rolled back)."""
    d = make_daemon(env={"STRIPE_API_BASE": fake_stripe.url, **QUIET})
    d.start()
    with d.client(timeout=30) as c:
        held = create_ok(c, cl.checkout("deal-db-held", ["slug:db-held"]))
        taken = create_ok(c, cl.checkout("deal-db-taken", ["slug:db-taken"]))
        cl.pay_by_webhook(c, fake_stripe, taken)
        gone = create_ok(c, cl.checkout("deal-db-gone", ["slug:db-gone"]))
        cl.expire_by_webhook(c, fake_stripe, gone)
        other = create_ok(c, cl.checkout("deal-db-other", ["slug:other"]))
    assert d.stop() == 0
    now = int(time.time())
    insert = ("INSERT INTO claims (key, payment_id, deal_id, state, created_at, updated_at)"
              " VALUES (?, ?, 'deal-db-other', ?, ?, ?)")
    for key, state in (("slug:db-held", "HELD"), ("slug:db-held", "TAKEN"),
                       ("slug:db-taken", "HELD"), ("slug:db-taken", "TAKEN")):
        assert cl.try_write_rolled_back(d, str(tmp_path), insert,
                                        key, other.payment_id, state, now, now), (
            f"the database took a second {state} row for {key}")
    # A released name may be held again; released history may repeat.
    assert not cl.try_write_rolled_back(d, str(tmp_path), insert,
                                        "slug:db-gone", other.payment_id, "HELD", now, now), (
        "the database refused to hold a released name again")
    assert held.payment_id
