"""HandleStripeEvent: signatures, deduplication, fulfilment, async payments, privacy.

Guarantees 4, 5, 10 and 11 of behaviour.md. The events are the fake Stripe's
own (its webhook delivery: the exact body and a valid Stripe-Signature);
where a test needs an event the fake would not send at that point (a late
`expired`, an unknown type, an unknown session), it forges one from a real
payload and signs it with HMAC-SHA256 itself.

Where the contract leaves the outcome open, the tests accept what a careful
implementation may answer and say so: a late event that changes nothing
(`expired` after `completed`), a `completed` event that only waits (async
payment), and a refund event that is only recorded may be APPLIED (stored,
applied as a no-op) or IGNORED, but never DUPLICATE (they are new event ids).
"""

from __future__ import annotations

import json
import signal
import time

import pytest

import checkout_support as cs
import paymentsd_harness as h
import webhook_support as ws
from checkout_support import expect_error

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

SKU = "wh-sku"


def _paid_deal(c, fake, deal, qty=2, sku=SKU):
    """A deal whose session the customer paid at the fake (no webhook delivered yet)."""
    pay = ws.open_checkout(c, deal, sku, qty)
    fake.complete_session(pay.checkout_session_id, paid=True)
    return pay


# ---------------------------------------------------------------------------
# 1. One completed event, five concurrent deliveries, then a late expired event


@pytest.mark.test_timeout(60)
def test_completed_delivered_five_times_concurrently_then_late_expired(pay_daemon, fake_stripe,
                                                                       pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = _paid_deal(c, fake_stripe, "deal-wh-5x", qty=2)
    assert cs.get_stock(c, SKU).reserved == 2, "test setup: the checkout reserved nothing"
    body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)
    event_id = ws.event_id_of(body)

    def one(i):
        with h.Client(d.socket_path, timeout=30) as cc:
            return ws.deliver(cc, body, sig, timeout=30)

    results = cs.run_concurrently(5, one, timeout=40)
    cs.all_answered_ok(results, "5 concurrent deliveries of one event")
    outcomes = sorted(ws.outcome_name(r.outcome) for _, r in results)
    assert outcomes == ["EVENT_OUTCOME_APPLIED"] + ["EVENT_OUTCOME_DUPLICATE"] * 4, (
        f"5 concurrent deliveries of one event: outcomes {outcomes}, expected exactly one "
        f"APPLIED and four DUPLICATE")
    for _, r in results:
        assert r.event_id == event_id and r.type == ws.COMPLETED, (
            f"EventResult names {r.event_id!r}/{r.type!r}, expected {event_id!r}/{ws.COMPLETED}")

    session = fake_stripe.session(pay.checkout_session_id)

    def check_paid(when):
        payments = cs.list_payments(c, "deal-wh-5x")
        assert len(payments) == 1, f"{when}: payments {ws.summary(payments)}"
        got = payments[0]
        assert got.status == pb.PAYMENT_STATUS_PAID, (
            f"{when}: payment is {cs.status_name(got.status)}, expected PAID")
        assert got.order_id.startswith("ord_"), f"{when}: order_id {got.order_id!r}"
        assert got.payment_intent_id == session["payment_intent"], (
            f"{when}: payment_intent_id {got.payment_intent_id!r}, Stripe's is "
            f"{session['payment_intent']!r}")
        st = cs.get_stock(c, SKU)
        assert (st.on_hand, st.reserved, st.available) == (8, 0, 8), (
            f"{when}: stock must be committed exactly once "
            f"(on_hand 10 -> 8, reserved 2 -> 0): {st}")
        paid = ws.paid_transitions(c, "deal-wh-5x")
        assert len(paid) == 1, (
            f"{when}: {len(paid)} audit rows moved the payment to PAID, expected one: "
            f"{[(e.kind, e.from_status, e.to_status) for e in paid]}")
        return got

    first = check_paid("after 5 concurrent deliveries")

    # Out of order: an expired event for the same session arrives after completed.
    expired = ws.forge(body, ws.EXPIRED, object_updates={"status": "expired"})
    status, res = ws.deliver(c, expired, ws.sign(expired))
    assert status.code == pb.OK, f"late expired event: {h.describe_status(status)}"
    assert res.event_id == ws.event_id_of(expired) and res.type == ws.EXPIRED
    assert res.outcome in (pb.EVENT_OUTCOME_APPLIED, pb.EVENT_OUTCOME_IGNORED), (
        f"a new (late) expired event answered {ws.outcome_name(res.outcome)}")
    status, res = ws.deliver(c, expired, ws.sign(expired))
    assert status.code == pb.OK and res.outcome == pb.EVENT_OUTCOME_DUPLICATE, (
        f"the expired event again: {h.describe_status(status)} "
        f"{ws.outcome_name(res.outcome) if res else ''}")
    # And the completed event once more, sequentially.
    res = ws.deliver_ok(c, body, sig, "completed again")
    assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE, ws.outcome_name(res.outcome)

    after = check_paid("after the late expired event")
    assert after.order_id == first.order_id, (
        f"order id changed {first.order_id} -> {after.order_id}")
    assert fake_stripe.session(pay.checkout_session_id)["status"] == "complete"
    assert cs.wait_no_pending(d, 10) == 0


# ---------------------------------------------------------------------------
# 3. Signatures


def _expect_rejected(c, pb, body, sig, reason, what):
    status, _ = ws.deliver(c, body, sig)
    expect_error(status, "UNAUTHENTICATED", reason, what)
    # Never echo what the right signature would have been.
    now = int(time.time())
    for t in range(now - 2, now + 2):
        assert ws.hmac_hex(h.WEBHOOK_SECRET, body, t) not in status.message, (
            f"{what}: the error message contains the expected signature")


@pytest.mark.test_timeout(60)
def test_signature_verification(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = _paid_deal(c, fake_stripe, "deal-sig", qty=1)
    eid = ws.event_id_for(fake_stripe, pay.checkout_session_id, ws.COMPLETED)
    body, good_sig = ws.delivery(fake_stripe, eid)
    now = int(time.time())
    good_hex = ws.hmac_hex(h.WEBHOOK_SECRET, body, now)

    doc = json.loads(body)
    doc["data"]["object"]["amount_total"] += 1
    tampered = json.dumps(doc, indent=2).encode()
    assert tampered != body

    wrong_secret_body, wrong_secret_sig = ws.delivery(fake_stripe, eid, secret="whsec_wrong")
    cases = [
        ("wrong secret", wrong_secret_body, wrong_secret_sig, "bad_signature"),
        ("tampered body", tampered, good_sig, "bad_signature"),
        ("body with a trailing space", body + b" ", good_sig, "bad_signature"),
        ("missing header", body, "", "bad_signature"),
        ("header of spaces", body, "   ", "bad_signature"),
        ("garbage header", body, "nonsense", "bad_signature"),
        ("no t", body, f"v1={good_hex}", "bad_signature"),
        ("no v1", body, f"t={now}", "bad_signature"),
        ("only v0", body, f"t={now},v0={good_hex}", "bad_signature"),
        ("v1 of another timestamp", body, f"t={now - 1},v1={good_hex}", "bad_signature"),
        ("v1 truncated", body, f"t={now},v1={good_hex[:32]}", "bad_signature"),
        ("v1 empty", body, f"t={now},v1=", "bad_signature"),
        ("stale timestamp (now-400)", body,
         ws.sign(body, timestamp=now - 400), "timestamp_outside_tolerance"),
        ("future timestamp (now+400)", body,
         ws.sign(body, timestamp=now + 400), "timestamp_outside_tolerance"),
        ("stale delivery from the fake", *ws.delivery(fake_stripe, eid, timestamp=now - 3600),
         "timestamp_outside_tolerance"),
    ]
    for what, b, s, reason in cases:
        _expect_rejected(c, pb, b, s, reason, what)

    # A rejected delivery changed nothing and was not stored.
    got = cs.get_payment(c, deal_id="deal-sig")
    assert got.status == pb.PAYMENT_STATUS_CREATED and not got.order_id, (
        f"after rejected deliveries the payment is {cs.status_name(got.status)}")
    assert cs.get_stock(c, SKU).reserved == 1

    # Several v1 entries (and a v0) where only one is right: accepted, within tolerance.
    t = int(time.time()) - 240
    right = ws.hmac_hex(h.WEBHOOK_SECRET, body, t)
    multi = f"t={t},v0={'0' * 64},v1={'f' * 64},v1={right},v1={'a' * 64}"
    res = ws.deliver_ok(c, body, multi, "several v1 entries, one right, t=now-240")
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED, (
        f"the first accepted delivery answered {ws.outcome_name(res.outcome)}, expected "
        f"APPLIED (a rejected delivery must not have been stored)")
    assert res.event_id == eid
    got = cs.get_payment(c, deal_id="deal-sig")
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id

    # The right entry first this time: accepted (seen before).
    t = int(time.time())
    first_right = f"t={t},v1={ws.hmac_hex(h.WEBHOOK_SECRET, body, t)},v1={'b' * 64}"
    res = ws.deliver_ok(c, body, first_right, "right v1 first, then a wrong one")
    assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE
    # Even a known event id is verified first.
    _expect_rejected(c, pb, tampered, good_sig, "bad_signature", "tampered known event")
    _expect_rejected(c, pb, body, ws.sign(body, timestamp=int(time.time()) - 400),
                     "timestamp_outside_tolerance", "stale known event")

    # Correctly signed, but not a Stripe event.
    for junk in (b'{"hello": "world"}', b"not json at all", b"[]", b"",
                 b'{"id": "evt_x", "object": "event"}'):
        status, _ = ws.deliver(c, junk, ws.sign(junk))
        expect_error(status, "INVALID_ARGUMENT", "invalid_field",
                     f"signed non-event {junk[:20]!r}", field="payload")
    h.assert_clean_stderr(d)


@pytest.mark.test_timeout(60)
def test_signature_secret_rotation(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env={"STRIPE_WEBHOOK_SECRETS": "whsec_old,whsec_new"})
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    deals = {}
    for deal in ("deal-rot-new", "deal-rot-old", "deal-rot-none"):
        pay = _paid_deal(c, fake_stripe, deal, qty=1)
        deals[deal] = ws.event_id_for(fake_stripe, pay.checkout_session_id, ws.COMPLETED)

    for deal, secret in (("deal-rot-new", "whsec_new"), ("deal-rot-old", "whsec_old")):
        body, sig = ws.delivery(fake_stripe, deals[deal], secret=secret)
        res = ws.deliver_ok(c, body, sig, f"signed with {secret} during rotation")
        assert res.outcome == pb.EVENT_OUTCOME_APPLIED, ws.outcome_name(res.outcome)
        assert cs.get_payment(c, deal_id=deal).status == pb.PAYMENT_STATUS_PAID
    # A secret that is not configured (the harness default) is refused.
    body, sig = ws.delivery(fake_stripe, deals["deal-rot-none"], secret=h.WEBHOOK_SECRET)
    status, _ = ws.deliver(c, body, sig)
    expect_error(status, "UNAUTHENTICATED", "bad_signature", "a secret not configured")
    # Two v1 entries, one per secret (Stripe signs with each during a roll): accepted.
    t = int(time.time())
    both = (f"t={t},v1={ws.hmac_hex('whsec_other', body, t)},"
            f"v1={ws.hmac_hex('whsec_new', body, t)}")
    res = ws.deliver_ok(c, body, both, "one v1 per secret")
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (7, 0), f"three paid deals of one unit: {st}"
    h.assert_clean_stderr(d, extra_secrets=["whsec_old", "whsec_new"])


# ---------------------------------------------------------------------------
# 5. Async payment methods


@pytest.mark.test_timeout(60)
def test_async_payment_succeeds_then_fails_elsewhere(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)

    # Deal A: completed unpaid, then the payment succeeds.
    a = ws.open_checkout(c, "deal-async-ok", SKU, 2)
    fake_stripe.complete_session(a.checkout_session_id, paid=False)
    body, sig = ws.session_delivery(fake_stripe, a.checkout_session_id, ws.COMPLETED)
    assert json.loads(body)["data"]["object"]["payment_status"] == "unpaid"
    res = ws.deliver_ok(c, body, sig, "completed, unpaid")
    assert res.outcome in (pb.EVENT_OUTCOME_APPLIED, pb.EVENT_OUTCOME_IGNORED), (
        ws.outcome_name(res.outcome))
    got = cs.get_payment(c, deal_id="deal-async-ok")
    assert got.status == pb.PAYMENT_STATUS_CREATED and not got.order_id, (
        f"completed but unpaid must wait: payment is {cs.status_name(got.status)} "
        f"order {got.order_id!r}")
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (10, 2), f"unpaid completion touched stock: {st}"
    # Asking Stripe changes nothing either: the session is complete but unpaid.
    status, payload = ws.confirm(c, deal_id="deal-async-ok", timeout=30)
    assert status.code == pb.OK, (
        f"ConfirmCheckout of an unpaid session: {h.describe_status(status)}")
    assert pb.Payment.FromString(payload).status == pb.PAYMENT_STATUS_CREATED, (
        "ConfirmCheckout fulfilled a session whose payment_status is unpaid")

    fake_stripe.control("POST", f"/_fake/sessions/{a.checkout_session_id}/async_result",
                        {"succeeded": True})
    body2, sig2 = ws.session_delivery(fake_stripe, a.checkout_session_id, ws.ASYNC_OK)
    res = ws.deliver_ok(c, body2, sig2, "async_payment_succeeded")
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED and res.type == ws.ASYNC_OK, (
        f"{res.type} {ws.outcome_name(res.outcome)}")
    got = cs.get_payment(c, deal_id="deal-async-ok")
    intent = fake_stripe.session(a.checkout_session_id)["payment_intent"]
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id.startswith("ord_"), (
        f"after async success: {cs.status_name(got.status)} order {got.order_id!r}")
    assert got.payment_intent_id == intent
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (8, 0), f"async success must commit 2 units: {st}"
    res = ws.deliver_ok(c, body2, sig2, "async_payment_succeeded again")
    assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE
    res = ws.deliver_ok(c, body, sig, "the unpaid completed event again")
    assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE
    assert cs.get_payment(c, deal_id="deal-async-ok").status == pb.PAYMENT_STATUS_PAID
    assert len(ws.paid_transitions(c, "deal-async-ok")) == 1

    # Deal B: completed unpaid, then the payment fails.
    b = ws.open_checkout(c, "deal-async-fail", SKU, 3)
    assert cs.get_stock(c, SKU).reserved == 3
    fake_stripe.complete_session(b.checkout_session_id, paid=False)
    ws.deliver_ok(c, *ws.session_delivery(fake_stripe, b.checkout_session_id, ws.COMPLETED),
                  "B completed, unpaid")
    assert cs.get_payment(c, deal_id="deal-async-fail").status == pb.PAYMENT_STATUS_CREATED
    fake_stripe.control("POST", f"/_fake/sessions/{b.checkout_session_id}/async_result",
                        {"succeeded": False})
    body3, sig3 = ws.session_delivery(fake_stripe, b.checkout_session_id, ws.ASYNC_FAILED)
    res = ws.deliver_ok(c, body3, sig3, "async_payment_failed")
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED, ws.outcome_name(res.outcome)
    got = cs.get_payment(c, deal_id="deal-async-fail")
    assert got.status == pb.PAYMENT_STATUS_FAILED and not got.order_id, (
        f"after async failure: {cs.status_name(got.status)} order {got.order_id!r}")
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (8, 0), f"async failure must release 3 units: {st}"
    res = ws.deliver_ok(c, body3, sig3, "async_payment_failed again")
    assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE
    # Forward only: a forged late success for the failed payment changes nothing.
    late = ws.forge(body3, ws.ASYNC_OK, object_updates={"payment_status": "paid"})
    ws.deliver_ok(c, late, ws.sign(late), "async success after failure")
    got = cs.get_payment(c, deal_id="deal-async-fail")
    assert got.status == pb.PAYMENT_STATUS_FAILED and not got.order_id, (
        f"a late success moved a FAILED payment to {cs.status_name(got.status)}")
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (8, 0), f"late success changed stock: {st}"
    assert any(e.to_status == "FAILED" for e in cs.list_events(c, "deal-async-fail"))


# ---------------------------------------------------------------------------
# 6. Unknown deals, unknown types, refunds recorded


@pytest.mark.test_timeout(60)
def test_unknown_deal_and_unknown_type_are_ignored_then_duplicate(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = _paid_deal(c, fake_stripe, "deal-known", qty=1)
    body, _ = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)

    unknown_session = ws.forge(body, ws.COMPLETED, object_updates={
        "id": "cs_test_nobodyknowsthis", "metadata": {"deal_id": "deal-nobody",
                                                      "payment_id": "pay_nobody"},
        "client_reference_id": "deal-nobody", "payment_intent": "pi_nobody"})
    unknown_type = ws.forge(body, "customer.created")
    for what, ev, typ in (("unknown session/deal", unknown_session, ws.COMPLETED),
                          ("unknown type", unknown_type, "customer.created")):
        res = ws.deliver_ok(c, ev, ws.sign(ev), what)
        assert (res.event_id, res.type) == (ws.event_id_of(ev), typ), f"{what}: {res}"
        assert res.outcome == pb.EVENT_OUTCOME_IGNORED, (
            f"{what}: {ws.outcome_name(res.outcome)}, expected IGNORED")
        res = ws.deliver_ok(c, ev, ws.sign(ev), f"{what} again")
        assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE, (
            f"{what} again: {ws.outcome_name(res.outcome)}, expected DUPLICATE")
    for deal in ("deal-nobody",):
        status, _ = c.call("GetPayment", pb.PaymentRef(deal_id=deal))
        assert status.code == pb.NOT_FOUND, (
            f"an event for an unknown deal created something: {h.describe_status(status)}")
    # The known deal is untouched by either.
    got = cs.get_payment(c, deal_id="deal-known")
    assert got.status == pb.PAYMENT_STATUS_CREATED, cs.status_name(got.status)
    assert cs.get_stock(c, SKU).reserved == 1


@pytest.mark.test_timeout(60)
def test_dashboard_refund_events_record_the_refund_once(pay_daemon, fake_stripe, pb):
    """A refund made in Stripe's dashboard arrives as refund.created and charge.refunded: both
    name it, it is recorded once, and it moves the payment; stock stays sold (no restock asked)."""
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = _paid_deal(c, fake_stripe, "deal-dash-refund", qty=1)
    ws.deliver_ok(c, *ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED))
    paid = cs.get_payment(c, deal_id="deal-dash-refund")
    assert paid.status == pb.PAYMENT_STATUS_PAID
    fake_stripe.control("POST", "/_fake/refunds",
                        {"payment_intent": paid.payment_intent_id, "amount": 400})
    evs = [e for e in ws.fake_events(fake_stripe)
           if e["type"] in ("charge.refunded", "refund.created")]
    assert len(evs) == 2, f"test setup: refund events at the fake {[e['type'] for e in evs]}"
    for e in evs:
        body, sig = ws.delivery(fake_stripe, e["id"])
        res = ws.deliver_ok(c, body, sig, e["type"])
        assert res.type == e["type"] and res.outcome == pb.EVENT_OUTCOME_APPLIED, (
            f"{e['type']}: {ws.outcome_name(res.outcome)}")
        res = ws.deliver_ok(c, body, sig, f"{e['type']} again")
        assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE
    got = cs.get_payment(c, deal_id="deal-dash-refund")
    refunds = [(r.amount, r.status, bool(r.stripe_refund_id))
               for r in got.refunds]
    assert refunds == [(400, pb.REFUND_STATUS_SUCCEEDED, True)], f"refunds recorded: {got.refunds}"
    assert (got.status, got.amount_refunded, got.order_id) == (
        pb.PAYMENT_STATUS_PARTIALLY_REFUNDED, 400, paid.order_id), got
    recorded = [e for e in cs.list_events(c, "deal-dash-refund") if e.kind == "refund.recorded_from_stripe"]
    assert len(recorded) == 1 and recorded[0].payment_id == paid.payment_id, recorded
    st = cs.get_stock(c, SKU)
    assert (st.on_hand, st.reserved) == (9, 0), f"a refund without restock changed stock: {st}"


# ---------------------------------------------------------------------------
# 8. Privacy: what the events carry is neither logged nor stored

@pytest.mark.sqlite_only("searches the bytes of the SQLite file and its -wal")
@pytest.mark.test_timeout(90)
def test_event_personal_data_not_logged_or_stored(pay_daemon, fake_stripe, pb):
    _personal_data_not_logged_or_stored(pay_daemon, fake_stripe, pb, cs.db_files)


@pytest.mark.postgresql_only
@pytest.mark.test_timeout(90)
def test_event_personal_data_not_logged_or_stored_in_postgresql(pay_daemon, fake_stripe, pb):
    """The same on PostgreSQL, whose files are the server's: every value of every table is
    searched instead of the file's bytes."""
    _personal_data_not_logged_or_stored(pay_daemon, fake_stripe, pb, cs.db_tables)


def _personal_data_not_logged_or_stored(pay_daemon, fake_stripe, pb, stored):
    """`stored(d)`: what the daemon's database holds, {where: bytes} (db_files or db_tables)."""
    d = pay_daemon(env={"PAYMENTSD_LOG_LEVEL": "debug", "PAYMENTSD_JANITOR_INTERVAL": "1"})
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 20)
    answers = []
    payloads = []

    def send(body, sig):
        status, res = ws.deliver(c, body, sig)
        answers.append(status.SerializeToString() + (res.SerializeToString() if res else b""))
        payloads.append(body)
        return status, res

    # Paid, then the same again; async (unpaid then succeeded); a dashboard refund;
    # an unknown session; a rejected (tampered) delivery; a late expired event.
    p1 = _paid_deal(c, fake_stripe, "deal-pii-1", qty=1)
    b1, s1 = ws.session_delivery(fake_stripe, p1.checkout_session_id, ws.COMPLETED)
    send(b1, s1)
    send(b1, s1)
    p2 = ws.open_checkout(c, "deal-pii-2", SKU, 1)
    fake_stripe.complete_session(p2.checkout_session_id, paid=False)
    send(*ws.session_delivery(fake_stripe, p2.checkout_session_id, ws.COMPLETED))
    fake_stripe.control("POST", f"/_fake/sessions/{p2.checkout_session_id}/async_result",
                        {"succeeded": True})
    send(*ws.session_delivery(fake_stripe, p2.checkout_session_id, ws.ASYNC_OK))
    intent = cs.get_payment(c, deal_id="deal-pii-1").payment_intent_id
    fake_stripe.control("POST", "/_fake/refunds", {"payment_intent": intent, "amount": 100})
    for e in ws.fake_events(fake_stripe):
        if e["type"] in ("charge.refunded", "refund.created"):
            send(*ws.delivery(fake_stripe, e["id"]))
    stranger = ws.forge(b1, ws.COMPLETED, object_updates={
        "id": "cs_test_strangerxx", "metadata": {"deal_id": "deal-stranger"}})
    send(stranger, ws.sign(stranger))
    send(b1.replace(b"Jenny", b"Jenna"), s1)
    late = ws.forge(b1, ws.EXPIRED, object_updates={"status": "expired"})
    send(late, ws.sign(late))
    for deal, want in (("deal-pii-1", pb.PAYMENT_STATUS_PARTIALLY_REFUNDED), ("deal-pii-2", pb.PAYMENT_STATUS_PAID)):
        got = cs.get_payment(c, deal_id=deal)
        assert got.status == want, (
            f"test setup: {deal} is {cs.status_name(got.status)}, expected {cs.status_name(want)}")
        for m in ("GetPayment", "ListPayments", "ListEvents"):
            s, p = c.call(m, pb.PaymentRef(deal_id=deal))
            answers.append(s.SerializeToString() + p)

    # What the deliveries actually carried (the search looks for real values).
    assert all(b"jenny.rosen@example.com" in p for p in payloads[:1])
    sessions = fake_stripe.sessions()
    client_secrets = sorted({s["client_secret"] for s in sessions if s.get("client_secret")})
    needles = [*cs.CUSTOMER_PII, cs.PHONE, "San Francisco", *client_secrets, *h.SECRETS]

    hits = []
    for n, a in enumerate(answers):
        hits += cs.leaks(needles, f"answer #{n}", a)
    for path, data in stored(d).items():
        hits += cs.leaks(needles, f"{path} (running)", data)
    rc = d.stop(signal.SIGTERM)
    assert rc == 0, f"SIGTERM stop exited {rc}"
    files = stored(d)
    assert files and (h.is_postgres(d.db_path) or d.db_path in files), (
        f"no database at {d.db_path}")
    for path, data in files.items():
        hits += cs.leaks(needles, f"{path} (after stop)", data)
    hits += cs.leaks(needles, "stderr", d.stderr_text().encode())
    hits += cs.leaks(needles, "stdout", d.stdout_text().encode())
    assert not hits, "personal data or secrets leaked:\n  " + "\n  ".join(sorted(set(hits)))
    # The search looked at real data: the event ids are stored (the inbox).
    blob = b"".join(files.values())
    assert ws.event_id_of(b1).encode() in blob, (
        "the delivered event id is not in the database: the search looked at the "
        "wrong files or tables (or the inbox is not durable)")
