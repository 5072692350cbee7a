"""Stripe's answers are checked (guarantee 3): a session answer without its `url` is not an open
checkout handed to the caller; the call is unavailable, and a retry with the same key, which
Stripe answers from what it stored, opens the one session."""

from __future__ import annotations

import pytest

import checkout_support as cs
import paymentsd_harness as h
from checkout_support import checkout_request, item

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores


def test_a_session_answer_without_url_is_not_an_open_checkout(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env={"PAYMENTSD_JANITOR_INTERVAL": "3600"})
    c = d.client(timeout=30)
    # Stripe makes the session, but the answer that arrives lacks its url, once.
    fake_stripe.add_fault(kind="omit_fields", fields=["url"])
    req = checkout_request("deal-no-url", [item("tee", 1, 1500)])
    status, _ = c.call("CreateCheckout", req, idempotency_key="k-no-url")
    cs.expect_error(status, "UNAVAILABLE", "stripe_unavailable", "a session answer without url")
    pending = cs.get_payment(c, "deal-no-url")
    assert pending.status == pb.PAYMENT_STATUS_CREATED and not pending.checkout_url, (
        f"the payment took a session without url: {pending.checkout_session_id!r} {pending.checkout_url!r}")

    again = cs.create_ok(c, req, "retry with the same key", idempotency_key="k-no-url")
    assert again.checkout_url and again.checkout_session_id, again
    sessions = fake_stripe.sessions_for_deal("deal-no-url")
    assert [s["id"] for s in sessions] == [again.checkout_session_id], (
        f"expected the one session the first attempt made, got {[s['id'] for s in sessions]}")
    assert sessions[0]["url"] == again.checkout_url
