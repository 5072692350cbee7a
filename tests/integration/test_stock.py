"""Stock: SetStock / AdjustStock / GetStock, and reservations made by CreateCheckout.

Guarantee 5 of behaviour.md (reservation part): stock of a tracked SKU (one
that has a stock row) is reserved in the transaction that creates the
CREATED payment; `on_hand - reserved` never goes below zero; untracked SKUs
are not limited.
"""

from __future__ import annotations

import pytest

import checkout_support as cs
import paymentsd_harness as h
from checkout_support import checkout_request, create_ok, expect_error, item

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores


def _stock_tuple(s):
    return (s.sku, s.on_hand, s.reserved, s.available)


def test_set_adjust_get_stock(pay_daemon, pb):
    d = pay_daemon()
    c = d.client()
    status, _ = c.call("GetStock", pb.StockRef(sku="tee-red-m"))
    expect_error(status, "NOT_FOUND", "sku_not_found", "GetStock before any SetStock")

    s = cs.set_stock(c, "tee-red-m", 5)
    assert _stock_tuple(s) == ("tee-red-m", 5, 0, 5), f"SetStock answered {s}"
    assert _stock_tuple(cs.get_stock(c, "tee-red-m")) == ("tee-red-m", 5, 0, 5)
    s = cs.set_stock(c, "tee-red-m", 12)
    assert _stock_tuple(s) == ("tee-red-m", 12, 0, 12), f"SetStock (again) answered {s}"
    s = cs.set_stock(c, "zero", 0)
    assert _stock_tuple(s) == ("zero", 0, 0, 0), f"SetStock 0 answered {s}"

    s = cs.call_ok(c, "AdjustStock", pb.StockAdjustment(sku="tee-red-m", delta=3))
    assert _stock_tuple(s) == ("tee-red-m", 15, 0, 15), f"AdjustStock +3 answered {s}"
    s = cs.call_ok(c, "AdjustStock", pb.StockAdjustment(sku="tee-red-m", delta=-15))
    assert _stock_tuple(s) == ("tee-red-m", 0, 0, 0), f"AdjustStock -15 answered {s}"
    status, _ = c.call("AdjustStock", pb.StockAdjustment(sku="tee-red-m", delta=-1))
    expect_error(status, "FAILED_PRECONDITION", "stock_below_reserved",
                 "AdjustStock below zero", sku="tee-red-m")
    assert _stock_tuple(cs.get_stock(c, "tee-red-m")) == ("tee-red-m", 0, 0, 0)

    status, _ = c.call("AdjustStock", pb.StockAdjustment(sku="nope", delta=1))
    expect_error(status, "NOT_FOUND", "sku_not_found", "AdjustStock unknown sku")
    status, _ = c.call("GetStock", pb.StockRef(sku="nope"))
    expect_error(status, "NOT_FOUND", "sku_not_found", "AdjustStock must not create a sku")

    status, _ = c.call("SetStock", pb.StockUpdate(sku="neg", on_hand=-1))
    expect_error(status, "INVALID_ARGUMENT", "invalid_field", "SetStock on_hand -1",
                 field="on_hand")
    status, _ = c.call("GetStock", pb.StockRef(sku="neg"))
    expect_error(status, "NOT_FOUND", "sku_not_found", "a refused SetStock must not create a row")
    for bad in ("", "bad sku", "s" * 129):
        for method, msg in (("SetStock", pb.StockUpdate(sku=bad, on_hand=1)),
                            ("AdjustStock", pb.StockAdjustment(sku=bad, delta=1)),
                            ("GetStock", pb.StockRef(sku=bad))):
            status, _ = c.call(method, msg)
            expect_error(status, "INVALID_ARGUMENT", "invalid_field", f"{method} sku={bad[:10]!r}",
                         field="sku")


def test_checkout_reserves_tracked_stock(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    cs.set_stock(c, "mug", 5)
    pay = create_ok(c, checkout_request("deal-s1", [item("mug", 3, 900), item("untracked", 50, 10)]))
    assert pay.status == pb.PAYMENT_STATUS_CREATED
    assert _stock_tuple(cs.get_stock(c, "mug")) == ("mug", 5, 3, 2), (
        f"after reserving 3 of 5: {cs.get_stock(c, 'mug')}")
    status, _ = c.call("GetStock", pb.StockRef(sku="untracked"))
    expect_error(status, "NOT_FOUND", "sku_not_found", "an untracked sku must stay untracked")

    sessions_before = fake_stripe.request_count()
    status, _ = c.call("CreateCheckout", checkout_request("deal-s2", [item("mug", 3, 900)]))
    expect_error(status, "FAILED_PRECONDITION", "insufficient_stock", "3 wanted, 2 available",
                 sku="mug")
    assert fake_stripe.request_count() == sessions_before, (
        "a checkout refused for stock reached Stripe")
    status, payload = c.call("GetPayment", pb.PaymentRef(deal_id="deal-s2"))
    if status.code == pb.OK:
        p = pb.Payment.FromString(payload)
        assert p.status != pb.PAYMENT_STATUS_CREATED, (
            "a checkout refused for stock left a CREATED payment")
    assert _stock_tuple(cs.get_stock(c, "mug")) == ("mug", 5, 3, 2)

    # All-or-nothing: one short item refuses the checkout and reserves none of the others.
    cs.set_stock(c, "cap", 10)
    status, _ = c.call("CreateCheckout", checkout_request(
        "deal-s3", [item("cap", 4, 100), item("mug", 3, 900)]))
    expect_error(status, "FAILED_PRECONDITION", "insufficient_stock", "cap ok, mug short",
                 sku="mug")
    assert _stock_tuple(cs.get_stock(c, "cap")) == ("cap", 10, 0, 10), (
        f"a refused checkout left a reservation: {cs.get_stock(c, 'cap')}")

    # Exactly what is available can be had.
    pay2 = create_ok(c, checkout_request("deal-s4", [item("mug", 2, 900), item("cap", 10, 100)]))
    assert pay2.created
    assert _stock_tuple(cs.get_stock(c, "mug")) == ("mug", 5, 5, 0)
    assert _stock_tuple(cs.get_stock(c, "cap")) == ("cap", 10, 10, 0)
    status, _ = c.call("CreateCheckout", checkout_request("deal-s5", [item("mug", 1, 900)]))
    expect_error(status, "FAILED_PRECONDITION", "insufficient_stock", "nothing left", sku="mug")
    # Untracked SKUs are never limited.
    create_ok(c, checkout_request("deal-s6", [item("untracked", 1000, 1)]))
    # Zero stock set explicitly is tracked and limits.
    cs.set_stock(c, "sold-out", 0)
    status, _ = c.call("CreateCheckout", checkout_request("deal-s7", [item("sold-out", 1, 1)]))
    expect_error(status, "FAILED_PRECONDITION", "insufficient_stock", "on_hand 0", sku="sold-out")


def test_stock_cannot_go_below_reserved(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    cs.set_stock(c, "hat", 10)
    create_ok(c, checkout_request("deal-hat", [item("hat", 4, 100)]))
    status, _ = c.call("SetStock", pb.StockUpdate(sku="hat", on_hand=3))
    expect_error(status, "FAILED_PRECONDITION", "stock_below_reserved", "SetStock 3 < reserved 4",
                 sku="hat")
    status, _ = c.call("AdjustStock", pb.StockAdjustment(sku="hat", delta=-7))
    expect_error(status, "FAILED_PRECONDITION", "stock_below_reserved",
                 "AdjustStock to 3 < reserved 4", sku="hat")
    assert _stock_tuple(cs.get_stock(c, "hat")) == ("hat", 10, 4, 6), "refused changes applied"
    s = cs.call_ok(c, "AdjustStock", pb.StockAdjustment(sku="hat", delta=-6))
    assert _stock_tuple(s) == ("hat", 4, 4, 0), f"AdjustStock down to reserved: {s}"
    s = cs.set_stock(c, "hat", 4)
    assert _stock_tuple(s) == ("hat", 4, 4, 0), f"SetStock equal to reserved: {s}"
    s = cs.set_stock(c, "hat", 20)
    assert _stock_tuple(s) == ("hat", 20, 4, 16)


def test_one_sku_on_several_lines_is_reserved_in_total(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    cs.set_stock(c, "dup", 3)
    status, _ = c.call("CreateCheckout", checkout_request(
        "deal-dup-1", [item("dup", 2, 100, "Dup A"), item("dup", 2, 100, "Dup B")]))
    expect_error(status, "FAILED_PRECONDITION", "insufficient_stock", "2 + 2 of 3", sku="dup")
    assert cs.get_stock(c, "dup").reserved == 0
    create_ok(c, checkout_request("deal-dup-2", [item("dup", 2, 100, "Dup A"),
                                                  item("dup", 1, 100, "Dup B")]))
    assert _stock_tuple(cs.get_stock(c, "dup")) == ("dup", 3, 3, 0)


def test_adjust_stock_overflow_is_refused_as_bad_input(pay_daemon, pb):
    d = pay_daemon()
    c = d.client()
    big = 2**63 - 1
    cs.set_stock(c, "huge", big - 5)
    status, _ = c.call("AdjustStock", pb.StockAdjustment(sku="huge", delta=10))
    assert status.code in (pb.INVALID_ARGUMENT, pb.OUT_OF_RANGE), (
        f"an AdjustStock that overflows on_hand is bad input (INVALID_ARGUMENT/OUT_OF_RANGE), "
        f"not a stock state: got {h.describe_status(status)}")
    assert cs.get_stock(c, "huge").on_hand == big - 5


@pytest.mark.test_timeout(120)
def test_two_deals_race_for_the_last_unit(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    rounds = 15
    with d.client() as c:
        for r in range(rounds):
            cs.set_stock(c, f"last-{r}", 1)
    problems = []
    for r in range(rounds):
        sku = f"last-{r}"

        def one(i, sku=sku, r=r):
            with h.Client(d.socket_path, timeout=30) as cl:
                return cl.call("CreateCheckout",
                               checkout_request(f"race-{r}-{i}", [item(sku, 1, 1000)]),
                               timeout_ms=25000, timeout=30)

        results = cs.run_concurrently(2, one, timeout=40)
        errs = [x for x in results if isinstance(x, BaseException)]
        assert not errs, f"round {r}: a call raised {errs[0]!r}"
        oks = [s for s, _ in results if s.code == pb.OK]
        refused = [s for s, _ in results
                   if s.code == pb.FAILED_PRECONDITION and s.reason == "insufficient_stock"
                   and h.status_details(s).get("sku") == sku]
        if len(oks) != 1 or len(refused) != 1:
            problems.append(f"round {r}: " + "; ".join(h.describe_status(s) for s, _ in results))
        with d.client() as c:
            st = cs.get_stock(c, sku)
        if (st.on_hand, st.reserved, st.available) != (1, 1, 0):
            problems.append(f"round {r}: stock {st.on_hand}/{st.reserved}/{st.available}")
    assert not problems, ("two deals racing for one unit must give exactly one checkout and one "
                          "insufficient_stock:\n" + "\n".join(problems))
    assert fake_stripe.counters()["sessions_created"] == rounds
