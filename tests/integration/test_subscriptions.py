"""Subscription checkouts (guarantee 2 of behaviour.md): one open per customer.

`mode = MODE_SUBSCRIPTION` needs a customer_ref; its items name Stripe prices
(`price_id`), with unit_amount 0 (Stripe's price decides) or the amount the caller expects it to
charge (checked against Stripe's); amount_total is Stripe's either way.
The session at the fake is mode=subscription with line_items[i][price] and
the deal/payment ids in subscription_data[metadata].

At most one open (CREATED) subscription checkout per customer across all
deals, enforced by the customer's lock (taken before the deal's) and a
partial UNIQUE index. A second deal of the same customer (another browser
tab: monthly in one, annual in the other): RETURN_EXISTING answers the open
one when its prices are the same (else checkout_in_progress), REPLACE expires
the open one at Stripe first and then opens the new one (already_paid if the
customer paid it meanwhile), REJECT refuses. Never two open subscription
sessions at the fake for one customer, also when many deals race.

Completion records the fake's subscription id on the payment; the fake's
customer.subscription.* events are APPLIED and audited as
`stripe.customer.subscription.<what>`.
"""

from __future__ import annotations


import pytest

import checkout_support as cs
import claims_support as cl
import paymentsd_harness as h
import webhook_support as ws
from checkout_support import create_ok, expect_error
from claims_support import ANNUAL, MONTHLY

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

QUIET = {"PAYMENTSD_JANITOR_INTERVAL": "3600"}
CUST = "cust_4711"


def _no_violations(d, fake, what: str):
    bad = cl.session_invariant_violations(d, fake) + cl.claim_invariant_violations(d)
    assert not bad, f"{what}:\n  " + "\n  ".join(bad)


def _open_for(fake, customer_ref: str) -> list[dict]:
    return [s for s in cl.open_sessions(fake)
            if s["mode"] == "subscription" and cl.session_customer(s) == customer_ref]


# ---------------------------------------------------------------------------
# The session at Stripe


def test_subscription_checkout_opens_a_subscription_session(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    req = cl.sub_request("deal-sub", CUST, [(MONTHLY, 1), ("price_seat_addon", 3)],
                         claims=["team:acme"], metadata={"plan": "basic"})
    pay = create_ok(c, req)
    assert pay.created and pay.status == pb.PAYMENT_STATUS_CREATED
    assert pay.mode == pb.MODE_SUBSCRIPTION, f"mode {pb.Mode.Name(pay.mode)}"
    assert pay.customer_ref == CUST
    assert [(i.price_id, i.quantity, i.unit_amount) for i in pay.items] == [
        (MONTHLY, 1, 0), ("price_seat_addon", 3, 0)], f"items: {pay.items}"
    assert list(pay.claims) == ["team:acme"]
    assert not pay.subscription_id, "no subscription before the customer paid"

    s = fake_stripe.session(pay.checkout_session_id)
    assert (s["mode"], s["status"]) == ("subscription", "open"), (s["mode"], s["status"])
    assert pay.amount_total == s["amount_total"] > 0, (
        f"a subscription's amount is what Stripe's prices charge: {pay.amount_total} vs {s['amount_total']}")
    posts = fake_stripe.requests(cs.SESSIONS_ROUTE)
    assert len(posts) == 1 and posts[0]["idempotency_key"]
    params = posts[0]["params"]
    assert params["mode"] == "subscription", params["mode"]
    lines = [params["line_items"][k] for k in sorted(params["line_items"], key=int)]
    assert lines == [{"price": MONTHLY, "quantity": "1"},
                     {"price": "price_seat_addon", "quantity": "3"}], (
        f"line items sent to Stripe: {lines} (a subscription names prices, no price_data)")
    sub_md = (params.get("subscription_data") or {}).get("metadata") or {}
    assert sub_md.get("deal_id") == "deal-sub" and sub_md.get("payment_id") == pay.payment_id, (
        f"subscription_data[metadata] must name deal and payment: {params.get('subscription_data')}")
    assert "payment_intent_data" not in params, (
        f"payment_intent_data is not allowed in subscription mode: {params['payment_intent_data']}")
    md = s.get("metadata") or {}
    assert md.get("deal_id") == "deal-sub" and md.get("payment_id") == pay.payment_id
    assert md.get("plan") == "basic"
    cl.expect_claim(c, "team:acme", "HELD", "deal-sub", expires_at=pay.expires_at)
    _no_violations(d, fake_stripe, "after one subscription checkout")


def test_subscription_validation(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    sub = pb.MODE_SUBSCRIPTION
    good = cl.sub_item(MONTHLY)

    def req(items=None, customer_ref=CUST):
        return cs.checkout_request("deal-subbad", items if items is not None else [good],
                                   mode=sub, customer_ref=customer_ref)

    cases = [
        ("no customer_ref", "customer_ref", req(customer_ref="")),
        ("customer_ref with a space", "customer_ref", req(customer_ref="cust 1")),
        ("customer_ref an e-mail", "customer_ref", req(customer_ref="a@b.example")),
        ("customer_ref 129 chars", "customer_ref", req(customer_ref="c" * 129)),
        ("no price_id", "items[0].price_id", req([cs.item("plan", 1, 0)])),
        ("price_id without prefix", "items[0].price_id",
         req([cs.item("plan", 1, 0, price_id="prod_123")])),
        ("price_id only the prefix", "items[0].price_id",
         req([cs.item("plan", 1, 0, price_id="price_")])),
        ("price_id with a dash", "items[0].price_id",
         req([cs.item("plan", 1, 0, price_id="price_a-b")])),
        ("price_id with a colon", "items[0].price_id",
         req([cs.item("plan", 1, 0, price_id="price_a:b")])),
        ("price_id 129 chars", "items[0].price_id",
         req([cs.item("plan", 1, 0, price_id="price_" + "p" * 123)])),
        ("second item's price_id", "items[1].price_id",
         req([good, cs.item("addon", 1, 0, price_id="bad")])),
        ("unit_amount too large", "items[0].unit_amount",
         req([cs.item("plan", 1, 100_000_000, price_id=MONTHLY)])),
        ("negative unit_amount", "items[1].unit_amount",
         req([good, cs.item("addon", 1, -1, price_id="price_addon")])),
        ("quantity 0", "items[0].quantity", req([cs.item("plan", 0, 0, price_id=MONTHLY)])),
        ("bad claim", "claims[0]", cl.sub_request("deal-subbad", CUST, claims=["bad claim"])),
    ]
    wrong = []
    for label, field, r in cases:
        status, _ = c.call("CreateCheckout", r)
        got = h.status_details(status).get("field")
        if not (status.code == pb.INVALID_ARGUMENT and status.reason == "invalid_field"
                and got == field):
            wrong.append(f"  {label}: expected invalid_field field={field!r}, "
                         f"got {h.describe_status(status)}")
    assert not wrong, "subscription validation:\n" + "\n".join(wrong)
    assert fake_stripe.call_counts() == {}, (
        f"refused requests reached the fake: {fake_stripe.call_counts()}")
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="deal-subbad"))
    expect_error(status, "NOT_FOUND", "deal_not_found", "after only refused calls")

    # The limits: price_ + 122 characters, a 128-character customer_ref.
    longest = "price_" + ("aZ09_" * 25)[:122]
    pay = create_ok(c, cs.checkout_request("deal-sublim", [cs.item("plan", 1, 0, price_id=longest)],
                                           mode=sub, customer_ref="C" * 128), "at the limits")
    assert pay.items[0].price_id == longest
    # Payment mode still refuses a price_id and needs no customer.
    status, _ = c.call("CreateCheckout", cs.checkout_request(
        "deal-paybad", [cs.item("x", 1, 100, price_id=MONTHLY)]))
    expect_error(status, "INVALID_ARGUMENT", "invalid_field", "price_id in payment mode",
                 field="items[0].price_id")


# ---------------------------------------------------------------------------
# Two tabs, one customer


def test_two_tabs_reject_keeps_one_open_session(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    monthly = create_ok(c, cl.sub_request("tab-monthly", CUST, [MONTHLY]))
    for prices in ([ANNUAL], [MONTHLY]):
        status, _ = c.call("CreateCheckout", cl.sub_request("tab-annual", CUST, prices,
                                                            on_open=pb.ON_OPEN_REJECT))
        expect_error(status, "ALREADY_EXISTS", "checkout_in_progress",
                     f"REJECT while the customer has an open checkout ({prices})",
                     payment_id=monthly.payment_id)
    assert fake_stripe.counters()["sessions_created"] == 1, "REJECT reached Stripe"
    assert [s["id"] for s in _open_for(fake_stripe, CUST)] == [monthly.checkout_session_id]
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="tab-annual"))
    expect_error(status, "NOT_FOUND", "deal_not_found", "the refused tab has no payment")
    assert cs.get_payment(c, deal_id="tab-monthly").status == pb.PAYMENT_STATUS_CREATED
    _no_violations(d, fake_stripe, "after REJECT")


def test_two_tabs_return_existing(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    first = create_ok(c, cl.sub_request("tab-1", CUST, [(MONTHLY, 2)]))
    # Same prices and quantities in another tab: the open checkout, of the other deal.
    for on_open in (pb.ON_OPEN_UNSPECIFIED, pb.ON_OPEN_RETURN_EXISTING):
        same = create_ok(c, cl.sub_request("tab-2", CUST, [(MONTHLY, 2)], on_open=on_open),
                         "the same prices in another tab")
        assert (same.payment_id, same.created, same.deal_id) == (
            first.payment_id, False, "tab-1"), (
            f"RETURN_EXISTING answered {same.payment_id} created={same.created} "
            f"deal={same.deal_id}, expected the open {first.payment_id} of tab-1")
        assert same.checkout_session_id == first.checkout_session_id
    # Other prices or quantities: in progress, nothing new at Stripe.
    for label, prices in (("annual", [ANNUAL]), ("quantity 3", [(MONTHLY, 3)]),
                          ("an extra price", [(MONTHLY, 2), ANNUAL])):
        status, _ = c.call("CreateCheckout", cl.sub_request("tab-2", CUST, prices))
        expect_error(status, "ALREADY_EXISTS", "checkout_in_progress",
                     f"RETURN_EXISTING with {label}")
    assert fake_stripe.counters()["sessions_created"] == 1
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="tab-2"))
    expect_error(status, "NOT_FOUND", "deal_not_found", "tab-2 never had its own payment")
    # Other customers and payment-mode checkouts of the same customer are not affected.
    other = create_ok(c, cl.sub_request("tab-other-cust", "cust_other", [(MONTHLY, 2)]))
    assert other.created and other.payment_id != first.payment_id
    one_off = create_ok(c, cs.checkout_request("shop-order", customer_ref=CUST),
                        "a one-off payment of the same customer")
    assert one_off.created
    _no_violations(d, fake_stripe, "after RETURN_EXISTING")


def test_two_tabs_replace_expires_the_first_before_creating_the_second(pay_daemon, fake_stripe,
                                                                      pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    monthly = create_ok(c, cl.sub_request("tab-m", CUST, [MONTHLY], claims=["slug:acme"]))
    annual = create_ok(c, cl.sub_request("tab-y", CUST, [ANNUAL], claims=["slug:acme"],
                                         on_open=pb.ON_OPEN_REPLACE),
                       "REPLACE from the other tab (asking for the same name)")
    assert annual.created and annual.deal_id == "tab-y" and annual.payment_id != monthly.payment_id
    assert annual.checkout_session_id != monthly.checkout_session_id

    # The fake's log: create (monthly), expire (monthly), then create (annual).
    log = [r for r in fake_stripe.requests() if r["route"] in (cs.SESSIONS_ROUTE, cs.EXPIRE_ROUTE)]
    summary = [(r["route"], r["path"].split("/")[-2][-8:] if r["route"] == cs.EXPIRE_ROUTE
                else ((r["params"] or {}).get("metadata") or {}).get("payment_id")) for r in log]
    expire_i = [i for i, r in enumerate(log) if r["route"] == cs.EXPIRE_ROUTE
                and r["path"].endswith(f"/{monthly.checkout_session_id}/expire")]
    create_i = [i for i, r in enumerate(log) if r["route"] == cs.SESSIONS_ROUTE
                and r["params"]["metadata"]["payment_id"] == annual.payment_id]
    assert expire_i and create_i, f"expected an expire of the first and a create of the second: {summary}"
    assert max(expire_i) < min(create_i), (
        f"the first tab's session must be expired at Stripe before the second is created: {summary}")
    assert all(r["status"] == 200 for r in log), f"fake answers: {[r['status'] for r in log]}"

    old = cs.get_payment(c, payment_id=monthly.payment_id)
    assert old.status == pb.PAYMENT_STATUS_CANCELED, (
        f"the replaced tab's payment is {cl.pay_status(old.status)}")
    assert fake_stripe.session(monthly.checkout_session_id)["status"] == "expired"
    assert [s["id"] for s in _open_for(fake_stripe, CUST)] == [annual.checkout_session_id]
    cl.expect_claim(c, "slug:acme", "HELD", "tab-y", expires_at=annual.expires_at,
                    what="the name moved with the replacement")
    events = cs.list_events(c, "tab-m")
    assert any(e.to_status == "CANCELED" for e in events), (
        f"no CANCELED audit event for the replaced tab: {[(e.kind, e.detail) for e in events]}")
    # And back: REPLACE from the first tab again.
    again = create_ok(c, cl.sub_request("tab-m", CUST, [MONTHLY], on_open=pb.ON_OPEN_REPLACE))
    assert again.created and again.deal_id == "tab-m"
    assert cs.get_payment(c, payment_id=annual.payment_id).status == pb.PAYMENT_STATUS_CANCELED
    assert [s["id"] for s in _open_for(fake_stripe, CUST)] == [again.checkout_session_id]
    cl.expect_claim(c, "slug:acme", "FREE", "", what="the last tab did not ask for the name")
    most, timeline = cl.max_open_per_customer_in_log(fake_stripe, CUST)
    assert most == 1, f"{most} subscription sessions of {CUST} were open at once: {timeline}"
    assert cs.wait_no_pending(d, 10) == 0
    _no_violations(d, fake_stripe, "after REPLACE")


def test_replace_when_the_other_tab_was_paid_answers_already_paid(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    monthly = create_ok(c, cl.sub_request("tab-paid", CUST, [MONTHLY], claims=["slug:paid"]))
    fake_stripe.complete_session(monthly.checkout_session_id, paid=True)  # no webhook yet
    sub_id = fake_stripe.session(monthly.checkout_session_id)["subscription"]
    status, _ = c.call("CreateCheckout", cl.sub_request("tab-late", CUST, [ANNUAL],
                                                        on_open=pb.ON_OPEN_REPLACE), timeout=30)
    expect_error(status, "FAILED_PRECONDITION", "already_paid",
                 "REPLACE of a tab the customer already paid")
    got = cs.get_payment(c, payment_id=monthly.payment_id)
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id, (
        f"the paid tab must be fulfilled: {cl.pay_status(got.status)} {got.order_id!r}")
    assert got.subscription_id == sub_id, (
        f"subscription_id {got.subscription_id!r}, the fake made {sub_id!r}")
    cl.expect_claim(c, "slug:paid", "TAKEN", "tab-paid")
    assert fake_stripe.counters()["sessions_created"] == 1, "a new session was opened anyway"
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="tab-late"))
    expect_error(status, "NOT_FOUND", "deal_not_found", "the refused tab has no payment")
    # The customer has no open checkout now: a new one may open.
    nxt = create_ok(c, cl.sub_request("tab-late", CUST, [ANNUAL]))
    assert nxt.created
    assert cs.wait_no_pending(d, 10) == 0
    _no_violations(d, fake_stripe, "after already_paid")


@pytest.mark.test_timeout(90)
def test_replace_while_stripe_cannot_expire_the_other_tab(pay_daemon, fake_stripe, pb):
    """Stripe keeps failing the expire of the first tab (5xx): the REPLACE answers
    stripe_unavailable and opens nothing new (never two open sessions); the first tab keeps
    its session and its names. The caller's retry, once Stripe is back, replaces it."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=60)
    first = create_ok(c, cl.sub_request("tab-5xx-1", CUST, [MONTHLY], claims=["slug:5xx"]))
    fake_stripe.add_fault(route=cs.EXPIRE_ROUTE, kind="status", status=500, times=50)
    req = cl.sub_request("tab-5xx-2", CUST, [ANNUAL], claims=["slug:5xx"],
                         on_open=pb.ON_OPEN_REPLACE)
    status, _ = cl.create(c, req, timeout=60)
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "REPLACE while expires fail")
    assert fake_stripe.counters()["sessions_created"] == 1, (
        "a second session was opened while the first could not be expired")
    assert [s["id"] for s in _open_for(fake_stripe, CUST)] == [first.checkout_session_id]
    assert cs.get_payment(c, payment_id=first.payment_id).status == pb.PAYMENT_STATUS_CREATED
    cl.expect_claim(c, "slug:5xx", "HELD", "tab-5xx-1", what="the first tab keeps its name")
    _no_violations(d, fake_stripe, "after the failed REPLACE")

    fake_stripe.clear_faults()
    again = create_ok(c, req, "the retry once Stripe is back")
    assert again.created and again.deal_id == "tab-5xx-2"
    assert cs.get_payment(c, payment_id=first.payment_id).status == pb.PAYMENT_STATUS_CANCELED
    assert [s["id"] for s in _open_for(fake_stripe, CUST)] == [again.checkout_session_id]
    cl.expect_claim(c, "slug:5xx", "HELD", "tab-5xx-2")
    assert cs.wait_no_pending(d, 10) == 0
    _no_violations(d, fake_stripe, "after the retry")


def test_the_customer_may_open_again_after_the_checkout_expired(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    first = create_ok(c, cl.sub_request("tab-exp-1", CUST, [MONTHLY]))
    cl.expire_by_webhook(c, fake_stripe, first)
    assert cs.get_payment(c, deal_id="tab-exp-1").status == pb.PAYMENT_STATUS_EXPIRED
    second = create_ok(c, cl.sub_request("tab-exp-2", CUST, [ANNUAL], on_open=pb.ON_OPEN_REJECT),
                       "REJECT after the customer's only checkout expired")
    assert second.created and second.deal_id == "tab-exp-2"


@pytest.mark.parametrize("on_open", ["REPLACE", "RETURN_EXISTING"])
def test_other_tab_whose_session_is_unknown(pay_daemon, fake_stripe, pb, on_open):
    """Stripe made the first tab's session but the daemon never heard (every answer dropped):
    the customer's next tab must not leave that session open beside a new one. REPLACE finishes
    and expires it first; RETURN_EXISTING (same prices) finishes it and answers it."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=45)
    fake_stripe.add_fault(kind="apply_then_drop", times=1)
    fake_stripe.add_fault(kind="drop", times=10)
    status, _ = c.call("CreateCheckout", cl.sub_request("tab-unk-1", CUST, [MONTHLY],
                                                        claims=["slug:unk"]))
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "every answer dropped")
    assert fake_stripe.counters()["sessions_created"] == 1, "test setup: Stripe made no session"
    pending = cs.get_payment(c, deal_id="tab-unk-1")
    assert pending.status == pb.PAYMENT_STATUS_CREATED and not pending.checkout_session_id
    fake_stripe.clear_faults()

    value = getattr(pb, f"ON_OPEN_{on_open}")
    # The same prices and names: "the same checkout" for RETURN_EXISTING across the customer's tabs.
    got = create_ok(c, cl.sub_request("tab-unk-2", CUST, [MONTHLY], on_open=value, claims=["slug:unk"]),
                    f"{on_open} from the second tab")
    assert cs.wait_no_pending(d, 10) == 0
    opened = _open_for(fake_stripe, CUST)
    assert [s["id"] for s in opened] == [got.checkout_session_id], (
        f"open sessions of {CUST}: {[s['id'][-8:] for s in opened]}; only "
        f"{got.checkout_session_id[-8:]} ({got.deal_id}) may be open")
    first = cs.get_payment(c, payment_id=pending.payment_id)
    if on_open == "REPLACE":
        assert got.created and got.deal_id == "tab-unk-2"
        assert first.status == pb.PAYMENT_STATUS_CANCELED, cl.pay_status(first.status)
        cl.expect_claim(c, "slug:unk", "HELD", "tab-unk-2")
    else:
        assert (got.payment_id, got.created) == (pending.payment_id, False), (
            f"RETURN_EXISTING answered {got.payment_id} created={got.created}")
        assert first.status == pb.PAYMENT_STATUS_CREATED and first.checkout_session_id
        cl.expect_claim(c, "slug:unk", "HELD", "tab-unk-1")
    _no_violations(d, fake_stripe, f"after {on_open} of a tab with an unknown session")


def test_late_subscription_payment_for_a_taken_name_is_refunded(pay_daemon, fake_stripe, pb):
    """The late-payment rule of the contract, for a subscription checkout: the customer pays
    an expired subscription checkout after another deal got its name. The payment must be
    refunded in full at Stripe (what Stripe charged: the session's amount_total), no order,
    and the payment must say why."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    first = create_ok(c, cl.sub_request("sub-late", CUST, [MONTHLY], claims=["slug:sublate"]))
    cl.expire_by_webhook(c, fake_stripe, first)
    cl.expect_claim(c, "slug:sublate", "FREE", "")
    create_ok(c, cl.checkout("deal-got-the-name", ["slug:sublate"]))
    res = cl.pay_late(c, fake_stripe, first)
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED, ws.outcome_name(res.outcome)
    events = cl.wait_for_audit(d, "sub-late", "payment.late_refunded", timeout=10)
    session = fake_stripe.session(first.checkout_session_id)
    charged, intent = session["amount_total"], session["payment_intent"]
    got = cs.get_payment(c, payment_id=first.payment_id)
    at_fake = cl.fake_refunds(fake_stripe, intent)
    ctx = (f"late subscription payment (Stripe charged {charged}): {cl.pay_status(got.status)} "
           f"order={got.order_id!r} reason={got.failure_reason!r} "
           f"refunds={[(r.amount, r.status) for r in got.refunds]} "
           f"refunds at the fake={[(r['amount'], r['status']) for r in at_fake]} "
           f"audit={[(e.kind, e.detail) for e in events]}")
    assert got.status == pb.PAYMENT_STATUS_EXPIRED and not got.order_id, ctx
    cl.expect_claim(c, "slug:sublate", "HELD", "deal-got-the-name")
    assert got.failure_reason == "late_payment_refunded: claim_taken key=slug:sublate", (
        f"the payment must be refunded and say why: {ctx}")
    assert [(r["amount"], r["status"]) for r in at_fake] == [(charged, "succeeded")], (
        f"one full refund at Stripe expected: {ctx}")
    assert [(r.amount, r.status) for r in got.refunds] == [(charged, pb.REFUND_STATUS_SUCCEEDED)], (
        f"payment.refunds must show the full refund: {ctx}")
    kinds = [e.kind for e in events]
    assert "payment.late" in kinds and "payment.late_refunded" in kinds, ctx


# ---------------------------------------------------------------------------
# Many tabs of one customer at once


@pytest.mark.test_timeout(150)
@pytest.mark.parametrize("mix", ["replace", "mixed"])
def test_many_deals_of_one_customer_race(pay_daemon, fake_stripe, pb, mix):
    d = pay_daemon(env=QUIET)
    n = 12
    on_opens = {
        "replace": [pb.ON_OPEN_REPLACE] * n,
        "mixed": [(pb.ON_OPEN_REPLACE, pb.ON_OPEN_REJECT, pb.ON_OPEN_RETURN_EXISTING)[i % 3]
                  for i in range(n)],
    }[mix]

    def one(i):
        with h.Client(d.socket_path, timeout=60) as cc:
            req = cl.sub_request(f"race-tab-{i}", CUST, [MONTHLY if i % 2 else ANNUAL],
                                 on_open=on_opens[i], claims=[f"slug:tab-{i}"])
            return cl.create(cc, req, timeout_ms=50000, timeout=60)

    results = cs.run_concurrently(n, one, timeout=90)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{errors[0]!r}"
    answers = [(i, pb.OnOpen.Name(on_opens[i]), h.describe_status(s)) for i, (s, _) in
               enumerate(results)]
    for i, (status, pay) in enumerate(results):
        if status.code == pb.OK:
            assert pay.mode == pb.MODE_SUBSCRIPTION and pay.customer_ref == CUST
            if on_opens[i] == pb.ON_OPEN_REPLACE:
                assert pay.created and pay.deal_id == f"race-tab-{i}", (
                    f"tab {i} REPLACE answered created={pay.created} deal={pay.deal_id}")
        else:
            assert (status.code, status.reason) in (
                (pb.ALREADY_EXISTS, "checkout_in_progress"),), (
                f"tab {i} ({pb.OnOpen.Name(on_opens[i])}): {h.describe_status(status)}; all: {answers}")
            assert on_opens[i] != pb.ON_OPEN_REPLACE, f"a REPLACE was refused: {answers}"
    assert cs.wait_no_pending(d, 20) == 0

    opened = _open_for(fake_stripe, CUST)
    assert len(opened) == 1, (
        f"{len(opened)} open subscription sessions for one customer at the fake; answers {answers}")
    most, timeline = cl.max_open_per_customer_in_log(fake_stripe, CUST)
    print(f"\n[{mix}] answers: {[a[2][:40] for a in answers]}\n  timeline at the fake: {timeline}")
    assert most == 1, (
        f"at some point {most} subscription sessions of {CUST} were open at once: {timeline}")
    created = [p for p in cl.payment_rows(d) if p["status"] == "CREATED"]
    assert [p["session"] for p in created] == [opened[0]["id"]], (
        f"the open session must be the one CREATED payment's: {created}")
    winner = created[0]["deal_id"]
    with d.client(timeout=30) as c:
        for i in range(n):
            want = ("HELD", winner) if f"race-tab-{i}" == winner else ("FREE", "")
            cl.expect_claim(c, f"slug:tab-{i}", *want, what="only the open tab holds its name")
    if mix == "replace":
        assert fake_stripe.counters()["sessions_created"] == n, "every REPLACE opens its own"
        assert len(fake_stripe.requests(cs.EXPIRE_ROUTE)) == n - 1
    _no_violations(d, fake_stripe, f"after {n} racing tabs ({mix})")


@pytest.mark.test_timeout(120)
def test_return_existing_tabs_race_to_one_session(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    n = 10

    def one(i):
        with h.Client(d.socket_path, timeout=60) as cc:
            return cl.create(cc, cl.sub_request(f"same-tab-{i}", CUST, [(MONTHLY, 1)]),
                             timeout_ms=50000, timeout=60)

    results = cs.run_concurrently(n, one, timeout=90)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{errors[0]!r}"
    bad = [h.describe_status(s) for s, _ in results if s.code != pb.OK]
    assert not bad, f"same prices in every tab must all be answered OK: {bad}"
    pays = [p for _, p in results]
    assert len({p.payment_id for p in pays}) == 1, (
        f"{len({p.payment_id for p in pays})} payments for one customer's same checkout")
    assert sum(p.created for p in pays) == 1, f"created=true {sum(p.created for p in pays)} times"
    assert fake_stripe.counters()["sessions_created"] == 1
    _no_violations(d, fake_stripe, "after the RETURN_EXISTING race")


@pytest.mark.test_timeout(150)
def test_several_customers_race_independently(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    customers = ["cust_a", "cust_b", "cust_c"]
    per = 5

    def one(i):
        cust = customers[i % len(customers)]
        with h.Client(d.socket_path, timeout=60) as cc:
            return cl.create(cc, cl.sub_request(f"multi-{i}", cust, [MONTHLY if i % 2 else ANNUAL],
                                                on_open=pb.ON_OPEN_REPLACE),
                             timeout_ms=50000, timeout=60)

    results = cs.run_concurrently(len(customers) * per, one, timeout=120)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{errors[0]!r}"
    bad = [h.describe_status(s) for s, _ in results if s.code != pb.OK]
    assert not bad, f"REPLACE calls failed: {bad}"
    assert cs.wait_no_pending(d, 20) == 0
    for cust in customers:
        assert len(_open_for(fake_stripe, cust)) == 1, (
            f"{cust}: {len(_open_for(fake_stripe, cust))} open subscription sessions")
        most, timeline = cl.max_open_per_customer_in_log(fake_stripe, cust)
        assert most == 1, f"{cust}: {most} open at once: {timeline}"
    _no_violations(d, fake_stripe, "after several customers raced")


# ---------------------------------------------------------------------------
# Completion: the subscription id, customer.subscription.* events


@pytest.mark.parametrize("via", ["webhook", "confirm"])
def test_completion_records_the_subscription(pay_daemon, fake_stripe, pb, via):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    pay = create_ok(c, cl.sub_request("deal-complete", CUST, [MONTHLY], claims=["slug:subbed"]))
    fake_stripe.complete_session(pay.checkout_session_id, paid=True)
    session = fake_stripe.session(pay.checkout_session_id)
    sub_id = session["subscription"]
    assert sub_id and sub_id.startswith("sub_"), f"test setup: the fake made no subscription: {session}"
    if via == "webhook":
        res = ws.deliver_ok(c, *ws.session_delivery(fake_stripe, pay.checkout_session_id,
                                                    ws.COMPLETED))
        assert res.outcome == pb.EVENT_OUTCOME_APPLIED, ws.outcome_name(res.outcome)
        got = cs.get_payment(c, deal_id="deal-complete")
    else:
        status, payload = ws.confirm(c, deal_id="deal-complete")
        assert status.code == pb.OK, f"ConfirmCheckout: {h.describe_status(status)}"
        got = pb.Payment.FromString(payload)
    assert got.status == pb.PAYMENT_STATUS_PAID and got.order_id.startswith("ord_"), (
        f"completed subscription checkout ({via}): {cl.pay_status(got.status)} {got.order_id!r}")
    assert got.subscription_id == sub_id, (
        f"Payment.subscription_id {got.subscription_id!r}, the fake's subscription is {sub_id!r}")
    assert cs.get_payment(c, payment_id=pay.payment_id).subscription_id == sub_id
    cl.expect_claim(c, "slug:subbed", "TAKEN", "deal-complete", expires_at=0)

    # The fake's customer.subscription.created: APPLIED and on record for the deal.
    evs = ws.fake_events(fake_stripe, "customer.subscription.created")
    assert len(evs) == 1 and evs[0]["data"]["object"]["id"] == sub_id, (
        f"test setup: the fake's subscription events {[e['data']['object']['id'] for e in evs]}")
    body, sig = ws.delivery(fake_stripe, evs[0]["id"])
    res = ws.deliver_ok(c, body, sig, "customer.subscription.created")
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED and res.type == "customer.subscription.created", (
        f"customer.subscription.created answered {ws.outcome_name(res.outcome)} type={res.type!r}")
    events = cs.list_events(c, "deal-complete")
    audited = [e for e in events if e.kind == "stripe.customer.subscription.created"]
    assert len(audited) == 1, (
        f"expected one stripe.customer.subscription.created audit event: "
        f"{[(e.kind, e.detail) for e in events]}")
    assert audited[0].payment_id == pay.payment_id
    assert ws.deliver_ok(c, body, sig, "again").outcome == pb.EVENT_OUTCOME_DUPLICATE

    # Later events of the subscription's life: APPLIED and audited, the payment unchanged.
    for what in ("updated", "deleted"):
        forged = ws.forge(body, f"customer.subscription.{what}",
                          object_updates={"status": "canceled" if what == "deleted" else "past_due"})
        res = ws.deliver_ok(c, forged, ws.sign(forged), f"customer.subscription.{what}")
        assert res.outcome == pb.EVENT_OUTCOME_APPLIED, (
            f"customer.subscription.{what}: {ws.outcome_name(res.outcome)}")
    kinds = [e.kind for e in cs.list_events(c, "deal-complete")]
    for what in ("updated", "deleted"):
        assert kinds.count(f"stripe.customer.subscription.{what}") == 1, (
            f"stripe.customer.subscription.{what} not audited once: {kinds}")
    final = cs.get_payment(c, deal_id="deal-complete")
    assert (final.status, final.subscription_id, final.order_id) == (
        pb.PAYMENT_STATUS_PAID, sub_id, got.order_id), "subscription events changed the payment"
    assert len(ws.paid_transitions(c, "deal-complete")) == 1
    # The deal is paid: no second subscription checkout for it.
    status, _ = c.call("CreateCheckout", cl.sub_request("deal-complete", CUST, [MONTHLY]))
    expect_error(status, "FAILED_PRECONDITION", "already_paid", "the subscribed deal again")
    _no_violations(d, fake_stripe, f"after completion via {via}")


def test_subscription_created_event_before_the_completed_event(pay_daemon, fake_stripe, pb):
    """The fake emits customer.subscription.created before checkout.session.completed; delivered
    in that order, both apply: the subscription event is audited, the completion fulfils."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    pay = create_ok(c, cl.sub_request("deal-order", CUST, [ANNUAL]))
    fake_stripe.complete_session(pay.checkout_session_id, paid=True)
    sub_id = fake_stripe.session(pay.checkout_session_id)["subscription"]
    created = ws.fake_events(fake_stripe, "customer.subscription.created")
    res = ws.deliver_ok(c, *ws.delivery(fake_stripe, created[0]["id"]), "subscription.created first")
    assert res.outcome == pb.EVENT_OUTCOME_APPLIED, ws.outcome_name(res.outcome)
    assert "stripe.customer.subscription.created" in [e.kind for e in cs.list_events(c, "deal-order")]
    assert cs.get_payment(c, deal_id="deal-order").status == pb.PAYMENT_STATUS_CREATED, (
        "a subscription event alone must not fulfil the checkout")
    ws.deliver_ok(c, *ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED))
    got = cs.get_payment(c, deal_id="deal-order")
    assert (got.status, got.subscription_id) == (pb.PAYMENT_STATUS_PAID, sub_id), (
        f"{cl.pay_status(got.status)} subscription_id={got.subscription_id!r} (want {sub_id})")


# ---------------------------------------------------------------------------
# The database enforces one open subscription checkout per customer


def test_database_enforces_one_open_subscription_per_customer(make_daemon, fake_stripe, pb,
                                                              tmp_path):
    d = make_daemon(env={"STRIPE_API_BASE": fake_stripe.url, **QUIET})
    d.start()
    with d.client(timeout=30) as c:
        old = create_ok(c, cl.sub_request("db-tab-1", CUST, [MONTHLY]))
        new = create_ok(c, cl.sub_request("db-tab-2", CUST, [ANNUAL], on_open=pb.ON_OPEN_REPLACE))
        other = create_ok(c, cl.sub_request("db-tab-3", "cust_else", [ANNUAL]))
        assert cs.get_payment(c, payment_id=old.payment_id).status == pb.PAYMENT_STATUS_CANCELED
    assert d.stop() == 0
    # Each write is tried on a copy of the SQLite file, or in a PostgreSQL transaction rolled back.
    assert cl.try_write_rolled_back(
        d, str(tmp_path), "UPDATE payments SET status = 'CREATED' WHERE payment_id = ?",
        old.payment_id), "the database took a second open subscription checkout for the customer"
    # Another customer's, or a payment-mode checkout of the same customer, is fine.
    assert not cl.try_write_rolled_back(
        d, str(tmp_path), "UPDATE payments SET customer_ref = 'cust_third', status = 'CREATED' "
        "WHERE payment_id = ?", old.payment_id), (
        "the database refused an open subscription checkout of another customer")
    assert new.payment_id and other.payment_id


def test_return_existing_across_tabs_needs_the_same_names(pay_daemon, fake_stripe, pb):
    """The customer's open tab holds a name; another tab for the same prices but other names is
    not "the same checkout": RETURN_EXISTING answers checkout_in_progress and opens nothing."""
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    first = create_ok(c, cl.sub_request("tab-names-1", CUST, [cl.MONTHLY], claims=["slug:tabname"]))
    posts = fake_stripe.request_count()
    status, _ = c.call("CreateCheckout", cl.sub_request(
        "tab-names-2", CUST, [cl.MONTHLY], on_open=pb.ON_OPEN_RETURN_EXISTING, claims=["slug:other"]))
    expect_error(status, "ALREADY_EXISTS", "checkout_in_progress", "same prices, other names",
                 payment_id=first.payment_id)
    assert fake_stripe.request_count() == posts, "a session was requested for the refused tab"
    cl.expect_claim(c, "slug:other", "FREE", "")
    assert [s["id"] for s in _open_for(fake_stripe, CUST)] == [first.checkout_session_id]
