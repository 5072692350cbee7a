"""Subscriptions carry their amount (issue 12, item 3): a subscription item may say what its Stripe
price charges (`unit_amount` with `price_id`) or leave it 0. Either way the payment's amount_total is
Stripe's, from the session create answer. When the caller's amounts differ from Stripe's total, the
session is expired at Stripe first and the call answers FAILED_PRECONDITION price_mismatch with both
amounts; nothing stays held."""

from __future__ import annotations

import pytest

import checkout_support as cs
import claims_support as cl
import paymentsd_harness as h
from checkout_support import create_ok, expect_error
from claims_support import MONTHLY

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

QUIET = {"PAYMENTSD_JANITOR_INTERVAL": "3600"}
PRICE = 1000  # the fake's price for every price_... (its config)


def _request(deal: str, customer: str, units: tuple[int, int], claims=()):
    """Two items: the monthly plan once and three seats, each with the unit_amount given."""
    items = [cs.item("plan-monthly", 1, units[0], name="Monthly", price_id=MONTHLY),
             cs.item("plan-seat", 3, units[1], name="Seat", price_id="price_seat_addon")]
    return cs.checkout_request(deal, items, mode=h.pb().MODE_SUBSCRIPTION, customer_ref=customer,
                               claims=claims)


def test_amounts_given_and_matching_are_stripes(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    pay = create_ok(c, _request("deal-sa-match", "cust-sa-1", (PRICE, PRICE)))
    s = fake_stripe.session(pay.checkout_session_id)
    assert s["amount_total"] == 4 * PRICE, s["amount_total"]
    assert (pay.status, pay.amount_total) == (pb.PAYMENT_STATUS_CREATED, 4 * PRICE), (
        f"{cs.status_name(pay.status)} amount_total={pay.amount_total}")
    again = cs.get_payment(c, deal_id="deal-sa-match")
    assert again.amount_total == 4 * PRICE, "the stored amount is Stripe's"


def test_amounts_left_zero_are_still_stripes(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    pay = create_ok(c, _request("deal-sa-zero", "cust-sa-2", (0, 0)))
    assert pay.amount_total == fake_stripe.session(pay.checkout_session_id)["amount_total"] == 4 * PRICE, (
        f"amount_total={pay.amount_total}")


def test_a_mismatch_expires_the_session_first_and_holds_nothing(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    status, _ = cl.create(c, _request("deal-sa-bad", "cust-sa-3", (900, PRICE), claims=["team:sa-bad"]))
    expect_error(status, "FAILED_PRECONDITION", "price_mismatch", "a price the caller got wrong",
                 expected=str(900 + 3 * PRICE), stripe=str(4 * PRICE))
    sessions = [s for s in fake_stripe.sessions() if s.get("client_reference_id") == "deal-sa-bad"
                or (s.get("metadata") or {}).get("deal_id") == "deal-sa-bad"]
    assert sessions, "no session was created at the fake"
    assert all(s["status"] == "expired" for s in sessions), [s["status"] for s in sessions]
    # Nothing held: the name is free, and the customer can open a checkout with the right amounts.
    cl.expect_claim(c, "team:sa-bad", "FREE", "", what="after price_mismatch")
    got = cs.get_payment(c, deal_id="deal-sa-bad")
    assert (got.status, got.failure_reason) == (pb.PAYMENT_STATUS_FAILED, "price_mismatch"), (
        f"{cs.status_name(got.status)} {got.failure_reason!r}")
    ok = create_ok(c, _request("deal-sa-bad", "cust-sa-3", (PRICE, PRICE), claims=["team:sa-bad"]))
    assert ok.status == pb.PAYMENT_STATUS_CREATED and ok.amount_total == 4 * PRICE
