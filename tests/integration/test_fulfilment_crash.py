"""A crash at each crash point of event application, ConfirmCheckout and CancelCheckout,
then a restart (guarantees 3, 4, 8 and 10).

For each point: start the daemon with PAYMENTSD_CRASH_AT=<name> (the process
ends itself with status 137 there), make the call that reaches it, start the
daemon again on the same database and socket without the variable (janitor
every second), wait until no operation is pending, then check:

- stripe_event.stored: the event was accepted into the inbox before the crash,
  so the restarted daemon applies it by itself (at start-up or in a janitor
  sweep): exactly one order, stock committed once; Stripe's redelivery (the
  first delivery was never answered) is answered DUPLICATE and changes nothing;
- confirm_checkout.session_retrieved: the payment is CREATED or already PAID
  (nothing else); the caller's retry of ConfirmCheckout and the webhook then
  make exactly one order, stock committed once;
- cancel_checkout.session_expired: the session was expired at Stripe, so the
  restarted daemon finishes the cancel by itself: payment CANCELED, stock
  released, the session expired at the fake;

and for all: no open session at the fake that the daemon does not want (every
open session belongs to a CREATED payment), reserved stock equals the
quantities of the CREATED payments, on-hand stock is down by exactly the
quantities of the PAID payments, and every PAID payment has one order.
"""

from __future__ import annotations

import subprocess

import pytest

import checkout_support as cs
import paymentsd_harness as h
import webhook_support as ws
from checkout_support import expect_error

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

POINTS = ("stripe_event.stored", "confirm_checkout.session_retrieved",
          "cancel_checkout.session_expired")
SKU = "fc-sku"
ON_HAND = 10
QTY = 3
DEAL = "deal-fcrash"
BYSTANDER = "deal-fcrash-open"


def test_fulfilment_crash_points_are_listed(paymentsd_bin):
    res = subprocess.run([str(paymentsd_bin), "crash-points"], capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 0, f"paymentsd crash-points exited {res.returncode}: {res.stderr}"
    names = [l.strip() for l in res.stdout.splitlines() if l.strip()]
    missing = [n for n in POINTS if n not in names]
    assert not missing, f"crash points missing: {missing}; listed: {names}"


def _invariants(c, fake, pb, ctx: str):
    """The cross-deal invariants; returns {deal: [payments]}."""
    by_deal = {deal: cs.list_payments(c, deal) for deal in (DEAL, BYSTANDER)}
    payments = [p for ps in by_deal.values() for p in ps]
    created = [p for p in payments if p.status == pb.PAYMENT_STATUS_CREATED]
    paid = [p for p in payments if p.status == pb.PAYMENT_STATUS_PAID]
    sessions = fake.sessions()
    open_ids = {s["id"] for s in sessions if s["status"] == "open"}
    stray = open_ids - {p.checkout_session_id for p in created}
    assert not stray, f"open session(s) at Stripe the daemon does not want {sorted(stray)}: {ctx}"
    for p in created:
        s = next((s for s in sessions if s["id"] == p.checkout_session_id), None)
        # open, or complete and not yet fulfilled (the webhook/ConfirmCheckout still to come)
        assert s is not None and s["status"] in ("open", "complete"), (
            f"CREATED payment {p.payment_id} whose session is "
            f"{s and s['status']}: {ctx}")
    for p in paid:
        assert p.order_id.startswith("ord_") and p.payment_intent_id, (
            f"PAID payment {p.payment_id} without order/intent: {ctx}")
    for deal in by_deal:
        n = len(ws.paid_transitions(c, deal))
        want = sum(1 for p in by_deal[deal] if p.status == pb.PAYMENT_STATUS_PAID)
        assert n == want, f"{deal}: {n} audit transitions to PAID for {want} paid payment(s): {ctx}"
    st = cs.get_stock(c, SKU)
    qty = lambda ps: sum(i.quantity for p in ps for i in p.items if i.sku == SKU)  # noqa: E731
    assert (st.on_hand, st.reserved) == (ON_HAND - qty(paid), qty(created)), (
        f"stock on_hand/reserved {st.on_hand}/{st.reserved}, expected "
        f"{ON_HAND - qty(paid)}/{qty(created)} (paid {qty(paid)}, open {qty(created)}): {ctx}")
    return by_deal


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("crash_point", POINTS)
def test_fulfilment_crash_and_restart(make_daemon, fake_stripe, pb, crash_point):
    env = {"STRIPE_API_BASE": fake_stripe.url, "PAYMENTSD_JANITOR_INTERVAL": "1"}
    d = make_daemon(env=env)

    # 1. Set up without the crash point: stock, the deal's open checkout, and an open
    #    checkout of another deal that must stay untouched.
    d.start()
    with d.client(timeout=30) as c:
        cs.set_stock(c, SKU, ON_HAND)
        pay = ws.open_checkout(c, DEAL, SKU, QTY)
        other = ws.open_checkout(c, BYSTANDER, SKU, 1)
    assert d.stop() == 0
    if crash_point != "cancel_checkout.session_expired":
        fake_stripe.complete_session(pay.checkout_session_id, paid=True)
    body, sig = (ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)
                 if crash_point != "cancel_checkout.session_expired" else (b"", ""))

    # 2. The crash run.
    def call(c):
        if crash_point == "stripe_event.stored":
            return ws.deliver(c, body, sig, timeout=30)[0]
        if crash_point == "confirm_checkout.session_retrieved":
            return ws.confirm(c, deal_id=DEAL, timeout=30)[0]
        return ws.cancel(c, DEAL, reason="crash test", timeout=30)[0]

    answer = cs.crash_run(d, crash_point, call, events_down=fake_stripe)

    # 3. Restart on the same database and socket; wait until nothing is pending.
    d.start()
    pending = cs.wait_no_pending(d, timeout=20)
    assert pending == 0, (
        f"after a crash at {crash_point} and a restart, {pending} operation(s) still pending")
    if crash_point == "stripe_event.stored":
        ws.wait_payment_status(d, DEAL, pb.PAYMENT_STATUS_PAID, timeout=15)
    elif crash_point == "confirm_checkout.session_retrieved":
        # Nothing obliges the daemon to finish by itself (no operation is recorded for a
        # read); give a janitor sweep that does the chance to, for the record.
        healed = ws.wait_payment_status(d, DEAL, pb.PAYMENT_STATUS_PAID, timeout=4)
        print(f"\n[{crash_point}] after restart, by itself: {cs.status_name(healed.status)}")
    elif crash_point == "cancel_checkout.session_expired":
        ws.wait_payment_status(d, DEAL, pb.PAYMENT_STATUS_CANCELED, timeout=15)

    session = fake_stripe.session(pay.checkout_session_id)
    with d.client(timeout=30) as c:
        def ctx():
            ps = cs.list_payments(c, DEAL) + cs.list_payments(c, BYSTANDER)
            return (f"crash at {crash_point} (the call answered: {answer}); payments "
                    f"{ws.summary(ps)}; session {session['status']}/{session['payment_status']}")

        by_deal = _invariants(c, fake_stripe, pb, ctx())
        mine = by_deal[DEAL]
        assert len(mine) == 1, f"the deal has {len(mine)} payments: {ctx()}"
        latest = mine[0]
        bystander = by_deal[BYSTANDER]
        assert [(p.payment_id, p.status) for p in bystander] == [
            (other.payment_id, pb.PAYMENT_STATUS_CREATED)], f"the other deal changed: {ctx()}"

        if crash_point == "stripe_event.stored":
            assert latest.status == pb.PAYMENT_STATUS_PAID, (
                f"the stored event was not applied after the restart: {ctx()}")
            res = ws.deliver_ok(c, body, sig, "Stripe's redelivery after the crash")
            assert res.outcome == pb.EVENT_OUTCOME_DUPLICATE, (
                f"redelivery of an event stored before the crash answered "
                f"{ws.outcome_name(res.outcome)}, expected DUPLICATE: {ctx()}")
        elif crash_point == "confirm_checkout.session_retrieved":
            assert latest.status in (pb.PAYMENT_STATUS_CREATED, pb.PAYMENT_STATUS_PAID), (
                f"after a crash in ConfirmCheckout: {ctx()}")
            # The caller retries; Stripe delivers the webhook too.
            status, payload = ws.confirm(c, deal_id=DEAL, timeout=30)
            assert status.code == pb.OK, f"ConfirmCheckout retry: {h.describe_status(status)}"
            retried = pb.Payment.FromString(payload)
            assert retried.status == pb.PAYMENT_STATUS_PAID and retried.order_id, (
                f"ConfirmCheckout retry answered {cs.status_name(retried.status)}: {ctx()}")
            ws.deliver_ok(c, body, sig, "the webhook after the retry")
        else:
            assert session["status"] == "expired", (
                f"the cancel's session is {session['status']} at Stripe: {ctx()}")
            assert latest.status == pb.PAYMENT_STATUS_CANCELED, (
                f"the interrupted cancel was not finished after the restart: {ctx()}")
            status, _ = ws.cancel(c, DEAL)
            expect_error(status, "FAILED_PRECONDITION", "checkout_not_open",
                         "cancel again after the restart")
            # The fake's expired event (from the daemon's expire call) changes nothing.
            ws.deliver_ok(c, *ws.session_delivery(fake_stripe, pay.checkout_session_id,
                                                  ws.EXPIRED), "expired after cancel")

        # The same invariants after the follow-ups, and the end state of the deal.
        final = _invariants(c, fake_stripe, pb, ctx())[DEAL]
        assert len(final) == 1, ctx()
        want = (pb.PAYMENT_STATUS_CANCELED if crash_point == "cancel_checkout.session_expired"
                else pb.PAYMENT_STATUS_PAID)
        assert final[0].status == want, f"end state: {ctx()}"
        if want == pb.PAYMENT_STATUS_PAID:
            assert final[0].payment_intent_id == session["payment_intent"], ctx()
            st = cs.get_stock(c, SKU)
            assert (st.on_hand, st.reserved) == (ON_HAND - QTY, 1), (
                f"stock committed exactly once: {st}; {ctx()}")
        else:
            st = cs.get_stock(c, SKU)
            assert (st.on_hand, st.reserved) == (ON_HAND, 1), f"stock released: {st}; {ctx()}"
    assert cs.wait_no_pending(d, 10) == 0
    text = d.stderr_text()
    for secret in h.SECRETS:
        assert secret not in text, f"secret {secret[:6]}... in stderr"
