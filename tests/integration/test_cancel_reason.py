"""The cancel reason does not choose the final state (protocol.md section 4, CancelCheckout).

`CancelRequest.reason` is the caller's free text for the audit trail. A CancelCheckout of an
open checkout ends it CANCELED whatever that text says, also when it happens to spell one
of the daemon's own causes of closing a checkout: `expired_by_time` (the janitor's expiry
of a checkout past its time, which ends EXPIRED), `replaced` (CreateCheckout with
on_open=REPLACE) or `replaced_for_customer` (a subscription checkout replacing the
customer's open one on another deal). The reason still shows in the deal's audit trail.

The same holds when the cancel is finished by the restart after a crash between "expired at
Stripe" and "released here" (`cancel_checkout.session_expired`).
"""

from __future__ import annotations

import pytest

import checkout_support as cs
import paymentsd_harness as h
import webhook_support as ws

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

SKU = "cr-sku"
REASONS = ["expired_by_time", "replaced", "replaced_for_customer"]


def _stock(c, sku=SKU):
    st = cs.get_stock(c, sku)
    return st.on_hand, st.reserved


def _trail(events) -> list:
    return [(e.kind, e.from_status, e.to_status, e.detail) for e in events]


def _check_canceled_with_reason(c, pb, fake_stripe, deal: str, pay, reason: str, ctx: str):
    got = cs.get_payment(c, deal_id=deal)
    events = cs.list_events(c, deal)
    ctx = f"{ctx}; audit {_trail(events)}"
    assert (got.payment_id, got.status) == (pay.payment_id, pb.PAYMENT_STATUS_CANCELED), (
        f"CancelCheckout with reason {reason!r} must end the checkout CANCELED, it is "
        f"{cs.status_name(got.status)}; {ctx}")
    assert not any(e.to_status == "EXPIRED" for e in events), (
        f"the cancel moved the payment to EXPIRED; {ctx}")
    canceled = [e for e in events if e.to_status == "CANCELED"]
    assert len(canceled) == 1, f"{len(canceled)} transitions to CANCELED; {ctx}"
    assert reason in canceled[0].detail, (
        f"the cancel reason {reason!r} is not in the detail of its audit event "
        f"{canceled[0].kind!r} ({canceled[0].detail!r}); {ctx}")
    assert fake_stripe.session(pay.checkout_session_id)["status"] == "expired", (
        f"the canceled checkout's session is still open at Stripe; {ctx}")
    assert _stock(c) == (10, 0), f"the cancel must release the 3 reserved units: {_stock(c)}; {ctx}"


@pytest.mark.test_timeout(60)
@pytest.mark.parametrize("reason", REASONS)
def test_cancel_reason_does_not_choose_the_final_state(pay_daemon, fake_stripe, pb, reason):
    """CancelCheckout{deal_id, reason} of an open checkout answers and ends CANCELED, for
    reasons that spell the daemon's own causes; the reason is in the cancel's audit event.
    Stripe's own expired event, arriving afterwards, changes nothing."""
    d = pay_daemon(env={"PAYMENTSD_JANITOR_INTERVAL": "3600"})
    c = d.client(timeout=30)
    deal = f"deal-cr-{reason.replace('_', '-')}"
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, deal, SKU, 3)
    assert _stock(c) == (10, 3), f"test setup: {_stock(c)}"

    status, payload = ws.cancel(c, deal, reason=reason, timeout=30)
    assert status.code == pb.OK, f"CancelCheckout reason={reason!r}: {h.describe_status(status)}"
    answered = pb.Payment.FromString(payload)
    assert (answered.payment_id, answered.status) == (pay.payment_id, pb.PAYMENT_STATUS_CANCELED), (
        f"CancelCheckout with reason {reason!r} answered {cs.status_name(answered.status)}, "
        f"expected CANCELED (a reason is text for the audit trail, not a way to end the "
        f"checkout otherwise)")
    _check_canceled_with_reason(c, pb, fake_stripe, deal, pay, reason, f"reason {reason!r}")

    body, sig = ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.EXPIRED)
    ws.deliver_ok(c, body, sig, "Stripe's expired event after the cancel")
    after = cs.get_payment(c, deal_id=deal)
    assert after.status == pb.PAYMENT_STATUS_CANCELED, (
        f"the expired event moved the CANCELED payment to {cs.status_name(after.status)}")
    assert _stock(c) == (10, 0), f"released twice? {_stock(c)}"
    assert cs.wait_no_pending(d, 10) == 0


@pytest.mark.test_timeout(90)
@pytest.mark.parametrize("reason", REASONS)
def test_cancel_finished_after_a_crash_is_canceled_whatever_the_reason(make_daemon, fake_stripe,
                                                                       pb, reason):
    """CancelCheckout with such a reason, crash after Stripe expired the session and before
    the checkout was closed here (`cancel_checkout.session_expired`): the restart finishes
    the cancel, and it ends CANCELED (not EXPIRED) with the reason in the audit trail."""
    d = make_daemon(env={"STRIPE_API_BASE": fake_stripe.url, "PAYMENTSD_JANITOR_INTERVAL": "1"})
    deal = f"deal-crc-{reason.replace('_', '-')}"
    d.start()
    with d.client(timeout=30) as c:
        cs.set_stock(c, SKU, 10)
        pay = ws.open_checkout(c, deal, SKU, 3)
    assert d.stop() == 0

    req = pb.CancelRequest(deal_id=deal, reason=reason)
    answer = cs.crash_run(d, "cancel_checkout.session_expired",
                          lambda c: c.call("CancelCheckout", req, timeout=30)[0])
    d.start()
    pending = cs.wait_no_pending(d, timeout=20)
    ctx = (f"reason {reason!r}, crash at cancel_checkout.session_expired (the call answered: "
           f"{answer}), then a restart")
    assert pending == 0, f"{pending} operation(s) still pending 20 s after the restart; {ctx}"
    with d.client(timeout=30) as c:
        _check_canceled_with_reason(c, pb, fake_stripe, deal, pay, reason, ctx)
