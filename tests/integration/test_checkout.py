"""CreateCheckout (mode PAYMENT), GetPayment, ListPayments, ListEvents against the fake Stripe.

Guarantee 1 of behaviour.md (one open checkout per deal) and the validation
rules of protocol.md section 4. Every test runs a fresh daemon and a fresh
fake Stripe (fixture `pay_daemon`); the fixture `fake_stripe` asserts at
teardown that every request the daemon sent passed Stripe's parameter check.
"""

from __future__ import annotations

import time

import pytest

import checkout_support as cs
import paymentsd_harness as h
from checkout_support import checkout_request, create_ok, expect_error, item

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

ROUTE = cs.SESSIONS_ROUTE
# "expires_at within a minute of now + TTL": a minute, plus the test's clock reading
# (fractional seconds) against the daemon's (whole seconds) and the call's duration.
EXPIRY_SLACK = 62


def _items_tuple(items):
    return [(i.sku, i.name, i.quantity, i.unit_amount) for i in items]


# ---------------------------------------------------------------------------
# A checkout that opens


def test_create_checkout_opens_a_session(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    items = [item("tee-red-m", 2, 1500, "Red tee, M"), item("mug-1", 3, 799, "Mug")]
    req = checkout_request("deal-open-1", items, currency="eur", customer_ref="cust_42")
    before = time.time()
    pay = create_ok(c, req)

    assert pay.status == pb.PAYMENT_STATUS_CREATED, (
        f"status {cs.status_name(pay.status)}, expected CREATED")
    assert pay.payment_id.startswith("pay_"), f"payment_id {pay.payment_id!r} lacks 'pay_'"
    assert pay.deal_id == "deal-open-1"
    assert pay.customer_ref == "cust_42"
    assert pay.mode == pb.MODE_PAYMENT
    assert pay.currency == "eur"
    assert pay.amount_total == 2 * 1500 + 3 * 799, f"amount_total {pay.amount_total}"
    assert pay.amount_refunded == 0
    assert pay.created is True, "the call that opened the checkout must say created=true"
    assert pay.checkout_session_id.startswith("cs_"), (
        f"checkout_session_id {pay.checkout_session_id!r} is not a Stripe session id")
    assert pay.checkout_url, "checkout_url is empty"
    assert abs(pay.expires_at - (before + 1800)) <= EXPIRY_SLACK, (
        f"expires_at {pay.expires_at} is not now + 1800 (now={before:.0f})")
    for name in ("created_at", "updated_at"):
        v = getattr(pay, name)
        assert abs(v - before) < 60, f"{name} {v} is not about now ({before:.0f})"
    assert _items_tuple(pay.items) == _items_tuple(items), (
        f"items not echoed: {_items_tuple(pay.items)}")

    # What the fake Stripe has: exactly this one session, matching the payment.
    sessions = fake_stripe.sessions()
    assert [s["id"] for s in sessions] == [pay.checkout_session_id], (
        f"fake sessions {[s['id'] for s in sessions]}, payment names {pay.checkout_session_id}")
    s = sessions[0]
    assert s["status"] == "open"
    assert s["mode"] == "payment"
    assert s["amount_total"] == pay.amount_total, (
        f"Stripe session total {s['amount_total']} != payment total {pay.amount_total}")
    assert s["currency"] == "eur"
    assert s["url"] == pay.checkout_url, (
        f"checkout_url {pay.checkout_url!r} is not the session's url {s['url']!r}")
    assert abs(s["expires_at"] - pay.expires_at) <= 2, (
        f"expires_at sent to Stripe {s['expires_at']} != payment's {pay.expires_at}")
    md = s.get("metadata") or {}
    assert md.get("deal_id") == "deal-open-1" and md.get("payment_id") == pay.payment_id, (
        f"session metadata must name deal and payment, got {md}")
    assert s.get("client_reference_id") in ("deal-open-1", pay.payment_id), (
        f"client_reference_id {s.get('client_reference_id')!r} names neither deal nor payment")
    assert s["success_url"] == cs.DEFAULT_URLS[0] and s["cancel_url"] == cs.DEFAULT_URLS[1]

    # The POST carried an Idempotency-Key, and the line items as asked.
    posts = fake_stripe.requests(ROUTE)
    assert len(posts) == 1, f"{len(posts)} session creates for one checkout"
    assert posts[0]["idempotency_key"], "POST /v1/checkout/sessions without Idempotency-Key"
    lines = posts[0]["params"].get("line_items", {})
    sent = [(l.get("quantity"), (l.get("price_data") or {}).get("unit_amount"))
            for _, l in sorted(lines.items(), key=lambda kv: int(kv[0]))]
    assert sent == [("2", "1500"), ("3", "799")], f"line items sent to Stripe: {sent}"

    # GetPayment by deal and by id answer the same payment.
    by_deal = cs.get_payment(c, deal_id="deal-open-1")
    by_id = cs.get_payment(c, payment_id=pay.payment_id)
    for got, how in ((by_deal, "deal_id"), (by_id, "payment_id")):
        assert got.payment_id == pay.payment_id, f"GetPayment by {how}: {got.payment_id}"
        assert got.status == pb.PAYMENT_STATUS_CREATED
        assert got.checkout_session_id == pay.checkout_session_id
        assert got.amount_total == pay.amount_total
        assert got.expires_at == pay.expires_at
    listed = cs.list_payments(c, "deal-open-1")
    assert [p.payment_id for p in listed] == [pay.payment_id]

    events = cs.list_events(c, "deal-open-1")
    assert events, "ListEvents: no audit events for a created checkout"
    assert any(e.to_status == "CREATED" for e in events), (
        f"no audit event with to_status CREATED: {[(e.kind, e.from_status, e.to_status) for e in events]}")
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"seq not increasing: {seqs}"
    for e in events:
        assert e.payment_id == pay.payment_id, f"event of another payment: {e}"
        assert abs(e.at - before) < 60, f"event time {e.at} not about now"


@pytest.mark.parametrize("ttl", [1800, 7200, 86400])
def test_checkout_ttl_is_configurable(pay_daemon, fake_stripe, ttl):
    d = pay_daemon(env={"PAYMENTSD_CHECKOUT_TTL": str(ttl)})
    c = d.client()
    now = time.time()
    pay = create_ok(c, checkout_request("deal-ttl"), f"PAYMENTSD_CHECKOUT_TTL={ttl}")
    assert abs(pay.expires_at - (now + ttl)) <= EXPIRY_SLACK, (
        f"with PAYMENTSD_CHECKOUT_TTL={ttl}, expires_at {pay.expires_at} is not now + {ttl}")
    s = fake_stripe.session(pay.checkout_session_id)
    assert abs(s["expires_at"] - pay.expires_at) <= 2, (
        f"Stripe got expires_at {s['expires_at']}, payment says {pay.expires_at}")


def test_get_list_unknown_and_bad_refs(pay_daemon, pb):
    d = pay_daemon()
    c = d.client()
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="no-such-deal"))
    expect_error(status, "NOT_FOUND", "deal_not_found", "GetPayment unknown deal")
    status, _ = c.call("GetPayment", pb.PaymentRef(payment_id="pay_doesnotexist"))
    expect_error(status, "NOT_FOUND", "payment_not_found", "GetPayment unknown payment")
    status, _ = c.call("ListPayments", pb.PaymentRef(deal_id="no-such-deal"))
    expect_error(status, "NOT_FOUND", "deal_not_found", "ListPayments unknown deal")
    status, _ = c.call("GetPayment", pb.PaymentRef())
    expect_error(status, "INVALID_ARGUMENT", "invalid_field", "GetPayment with neither",
                 field="deal_id")
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="d1", payment_id="pay_x"))
    expect_error(status, "INVALID_ARGUMENT", "invalid_field", "GetPayment with both",
                 field="deal_id")
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="bad deal id"))
    expect_error(status, "INVALID_ARGUMENT", "invalid_field", "GetPayment malformed deal_id",
                 field="deal_id")


# ---------------------------------------------------------------------------
# Validation


def _bad_cases(pb):
    """(label, request, field) for requests that must be refused before Stripe."""
    base = lambda **kw: checkout_request("deal-bad", **kw)  # noqa: E731
    cases = []

    def case(label, field, req):
        cases.append((label, req, field))

    case("empty deal_id", "deal_id", checkout_request(""))
    case("deal_id 129 chars", "deal_id", checkout_request("d" * 129))
    case("deal_id with a space", "deal_id", checkout_request("deal 1"))
    case("deal_id with a slash", "deal_id", checkout_request("deal/1"))
    case("deal_id non-ASCII", "deal_id", checkout_request("d\u00e9al"))
    case("customer_ref with a space", "customer_ref", base(customer_ref="a b"))
    case("customer_ref 129 chars", "customer_ref", base(customer_ref="c" * 129))
    case("customer_ref an e-mail", "customer_ref", base(customer_ref="jane@example.com"))
    case("mode unspecified", "mode", base(mode=pb.MODE_UNSPECIFIED))
    for cur in ("EUR", "eu", "", "euro", "e1r"):
        case(f"currency {cur!r}", "currency", base(currency=cur))
    case("no items", "items", base(items=[]))
    case("101 items", "items",
         base(items=[item(f"sku-{i}", 1, 100) for i in range(101)]))
    case("total over 99999999", "items",
         base(items=[item("big-1", 1, 99999999), item("big-2", 1, 1)]))
    case("total over 99999999 by quantity", "items", base(items=[item("big", 2, 99999999)]))
    case("empty sku", "items[0].sku", base(items=[item("")]))
    case("second item's sku malformed", "items[1].sku",
         base(items=[item("ok-1"), item("bad sku")]))
    case("sku 129 chars", "items[0].sku", base(items=[item("s" * 129)]))
    case("empty name", "items[0].name", base(items=[item("n1", name="")]))
    case("name 251 chars", "items[0].name", base(items=[item("n1", name="x" * 251)]))
    case("quantity 0", "items[0].quantity", base(items=[item("q", 0)]))
    case("quantity -1", "items[0].quantity", base(items=[item("q", -1)]))
    case("quantity 1001", "items[0].quantity", base(items=[item("q", 1001)]))
    case("unit_amount 0", "items[0].unit_amount", base(items=[item("u", 1, 0)]))
    case("unit_amount -5", "items[0].unit_amount", base(items=[item("u", 1, -5)]))
    case("unit_amount 100000000", "items[0].unit_amount", base(items=[item("u", 1, 100000000)]))
    case("price_id in payment mode", "items[0].price_id",
         base(items=[item("p", 1, 100, price_id="price_123")]))
    case("third item bad quantity", "items[2].quantity",
         base(items=[item("a"), item("b"), item("c", 0)]))
    for field in ("success_url", "cancel_url"):
        for label, url in (("empty", ""), ("ftp", "ftp://shop.example/x"),
                           ("no scheme", "shop.example/x"), ("javascript", "javascript:alert(1)"),
                           ("2049 chars", "https://shop.example/" + "a" * (2049 - 21))):
            case(f"{field} {label}", field, base(**{field: url}))
    case("21 metadata entries", "metadata", base(metadata={f"k{i}": "v" for i in range(21)}))
    case("metadata empty key", "metadata", base(metadata={"": "v"}))
    case("metadata key 41 chars", "metadata", base(metadata={"k" * 41: "v"}))
    case("metadata value 501 chars", "metadata", base(metadata={"k": "v" * 501}))
    case("metadata reserved key deal_id", "metadata", base(metadata={"deal_id": "other"}))
    case("metadata reserved key payment_id", "metadata", base(metadata={"payment_id": "pay_x"}))
    return cases


def test_validation_refuses_each_bad_field(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    wrong = []
    for label, req, field in _bad_cases(pb):
        status, _ = c.call("CreateCheckout", req)
        got_field = h.status_details(status).get("field")
        field_ok = (got_field == field or
                    (field == "metadata" and (got_field or "").startswith(("metadata[", "metadata."))))
        if not (status.code == pb.INVALID_ARGUMENT and status.reason == "invalid_field" and field_ok):
            wrong.append(f"  {label}: expected invalid_field field={field!r}, "
                         f"got {h.describe_status(status)}")
    assert not wrong, "CreateCheckout validation:\n" + "\n".join(wrong)
    assert fake_stripe.call_counts() == {}, (
        f"refused requests reached the fake Stripe: {fake_stripe.call_counts()}")
    # Nothing was recorded for the deal either.
    status, _ = c.call("GetPayment", pb.PaymentRef(deal_id="deal-bad"))
    expect_error(status, "NOT_FOUND", "deal_not_found", "after only refused calls")


def test_validation_accepts_the_limits(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    ok_cases = [
        ("deal_id 128 chars of every allowed kind",
         checkout_request(("Az09_.:-" * 16)[:128])),
        ("customer_ref 128 chars", checkout_request("lim-cref", customer_ref="C" * 128)),
        ("no customer_ref", checkout_request("lim-nocref", customer_ref="")),
        ("name 250 chars", checkout_request("lim-name", [item("n", name="N" * 250)])),
        ("quantity 1000", checkout_request("lim-qty", [item("q", 1000, 1)])),
        ("unit_amount 99999999 (total exactly the limit)",
         checkout_request("lim-amount", [item("u", 1, 99999999)])),
        ("100 items", checkout_request("lim-100", [item(f"s-{i}", 1, 100) for i in range(100)])),
        ("20 metadata entries, 40-char key, 500-char value",
         checkout_request("lim-md", metadata={**{f"k{i}": "v" for i in range(19)},
                                              "K" * 40: "V" * 500})),
        ("2048-char success_url, http cancel_url",
         checkout_request("lim-url", success_url="https://shop.example/" + "a" * (2048 - 21),
                          cancel_url="http://shop.example/c")),
        ("sku with every allowed kind of char", checkout_request("lim-sku", [item("Az09_.:-")])),
    ]
    wrong = []
    for label, req in ok_cases:
        status, payload = c.call("CreateCheckout", req)
        if status.code != pb.OK:
            wrong.append(f"  {label}: expected OK, got {h.describe_status(status)}")
            continue
        pay = pb.Payment.FromString(payload)
        if pay.amount_total != cs.total_of(req) or not pay.checkout_session_id:
            wrong.append(f"  {label}: amount_total {pay.amount_total} (want {cs.total_of(req)}), "
                         f"session {pay.checkout_session_id!r}")
    assert not wrong, "valid requests at the limits:\n" + "\n".join(wrong)


# ---------------------------------------------------------------------------
# Guarantee 1: one open checkout per deal


def test_return_existing_same_items(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    req = checkout_request("deal-re", [item("a", 2, 500), item("b", 1, 250)])
    first = create_ok(c, req)
    assert first.created is True
    for on_open in (pb.ON_OPEN_UNSPECIFIED, pb.ON_OPEN_RETURN_EXISTING):
        again_req = checkout_request("deal-re", [item("a", 2, 500), item("b", 1, 250)],
                                     on_open=on_open)
        again = create_ok(c, again_req, f"repeat with on_open={pb.OnOpen.Name(on_open)}")
        assert again.payment_id == first.payment_id, "a repeat must return the open payment"
        assert again.created is False, "a repeat must say created=false"
        assert again.checkout_session_id == first.checkout_session_id
        assert again.checkout_url == first.checkout_url
        assert again.status == pb.PAYMENT_STATUS_CREATED
    counters = fake_stripe.counters()
    assert counters["sessions_created"] == 1, (
        f"{counters['sessions_created']} sessions at the fake for one deal")
    assert counters["requests"].get(ROUTE) == 1, (
        f"repeats reached Stripe: {counters['requests']}")
    assert len(cs.list_payments(c, "deal-re")) == 1


@pytest.mark.parametrize("change", ["quantity", "unit_amount", "extra_item", "sku", "currency"])
def test_return_existing_with_different_request_is_in_progress(pay_daemon, fake_stripe, pb,
                                                                change):
    d = pay_daemon()
    c = d.client()
    first = create_ok(c, checkout_request("deal-diff", [item("a", 2, 500)]))
    items, currency = [item("a", 2, 500)], "eur"
    if change == "quantity":
        items = [item("a", 3, 500)]
    elif change == "unit_amount":
        items = [item("a", 2, 501)]
    elif change == "extra_item":
        items = [item("a", 2, 500), item("b", 1, 100)]
    elif change == "sku":
        items = [item("z", 2, 500)]
    else:
        currency = "usd"
    status, _ = c.call("CreateCheckout", checkout_request("deal-diff", items, currency=currency))
    expect_error(status, "ALREADY_EXISTS", "checkout_in_progress", f"different {change}")
    assert fake_stripe.counters()["sessions_created"] == 1
    got = cs.get_payment(c, deal_id="deal-diff")
    assert got.payment_id == first.payment_id and got.status == pb.PAYMENT_STATUS_CREATED


def test_reject_refuses_even_the_same_request(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    first = create_ok(c, checkout_request("deal-rej"))
    status, _ = c.call("CreateCheckout", checkout_request("deal-rej", on_open=pb.ON_OPEN_REJECT))
    expect_error(status, "ALREADY_EXISTS", "checkout_in_progress", "on_open=REJECT")
    assert fake_stripe.counters()["sessions_created"] == 1
    assert cs.get_payment(c, deal_id="deal-rej").payment_id == first.payment_id
    # REJECT with no open checkout simply opens one.
    pay = create_ok(c, checkout_request("deal-rej-2", on_open=pb.ON_OPEN_REJECT))
    assert pay.created is True and pay.status == pb.PAYMENT_STATUS_CREATED


def test_replace_expires_old_session_and_opens_new(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    cs.set_stock(c, "rep-sku", 10)
    old = create_ok(c, checkout_request("deal-rep", [item("rep-sku", 2, 1000)]))
    assert cs.get_stock(c, "rep-sku").reserved == 2

    new = create_ok(c, checkout_request("deal-rep", [item("rep-sku", 3, 1000)],
                                        on_open=pb.ON_OPEN_REPLACE))
    assert new.created is True, "REPLACE must open a new checkout (created=true)"
    assert new.payment_id != old.payment_id, "REPLACE must make a new payment"
    assert new.checkout_session_id and new.checkout_session_id != old.checkout_session_id
    assert new.status == pb.PAYMENT_STATUS_CREATED
    assert new.amount_total == 3000

    old_s = fake_stripe.session(old.checkout_session_id)
    assert old_s["status"] == "expired", (
        f"the replaced session is {old_s['status']} at Stripe, expected expired")
    assert fake_stripe.session(new.checkout_session_id)["status"] == "open"
    api = [r for r in fake_stripe.requests() if r["route"] in (ROUTE, cs.EXPIRE_ROUTE)]
    order = [r["route"] for r in api]
    assert order == [ROUTE, cs.EXPIRE_ROUTE, ROUTE], (
        f"expected create, expire (old), create (new); the fake saw {order}")
    assert api[1]["path"].endswith(f"/{old.checkout_session_id}/expire")
    assert api[1]["idempotency_key"], "the expire POST carried no Idempotency-Key"

    old_now = cs.get_payment(c, payment_id=old.payment_id)
    assert old_now.status == pb.PAYMENT_STATUS_CANCELED, (
        f"replaced payment is {cs.status_name(old_now.status)}, expected CANCELED")
    stock = cs.get_stock(c, "rep-sku")
    assert (stock.on_hand, stock.reserved, stock.available) == (10, 3, 7), (
        f"after REPLACE the old reservation (2) must be released and the new one (3) held: {stock}")
    listed = cs.list_payments(c, "deal-rep")
    assert [(p.payment_id, p.status) for p in listed] == [
        (old.payment_id, pb.PAYMENT_STATUS_CANCELED), (new.payment_id, pb.PAYMENT_STATUS_CREATED)], (
        f"ListPayments (oldest first): {[(p.payment_id, cs.status_name(p.status)) for p in listed]}")
    assert cs.get_payment(c, deal_id="deal-rep").payment_id == new.payment_id, (
        "GetPayment(deal) must answer the latest payment")
    events = cs.list_events(c, "deal-rep")
    assert any(e.payment_id == old.payment_id and e.to_status == "CANCELED" for e in events), (
        f"no audit event for the old payment's CANCELED: "
        f"{[(e.payment_id, e.from_status, e.to_status) for e in events]}")
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"seq not increasing: {seqs}"


def test_replace_when_old_session_was_paid_answers_already_paid(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client()
    cs.set_stock(c, "paid-sku", 5)
    old = create_ok(c, checkout_request("deal-paid", [item("x", 1, 4200), item("paid-sku", 1, 100)]))
    assert cs.get_stock(c, "paid-sku").reserved == 1
    fake_stripe.complete_session(old.checkout_session_id, paid=True)
    status, _ = c.call("CreateCheckout", checkout_request(
        "deal-paid", [item("x", 2, 4200)], on_open=pb.ON_OPEN_REPLACE), timeout=30)
    expect_error(status, "FAILED_PRECONDITION", "already_paid",
                 "REPLACE of a checkout the customer already paid")
    got = cs.get_payment(c, deal_id="deal-paid")
    assert got.payment_id == old.payment_id, "no new payment may be made for a paid deal"
    assert got.status == pb.PAYMENT_STATUS_PAID, (
        f"the paid payment reads {cs.status_name(got.status)}, expected PAID")
    session = fake_stripe.session(old.checkout_session_id)
    assert got.payment_intent_id == session["payment_intent"], (
        f"the PAID payment's payment_intent_id {got.payment_intent_id!r} is not Stripe's "
        f"{session['payment_intent']!r}")
    st = cs.get_stock(c, "paid-sku")
    assert (st.on_hand, st.reserved) == (4, 0), (
        f"fulfilment must commit the reservation (on_hand 5 -> 4, reserved 1 -> 0): {st}")
    assert fake_stripe.counters()["sessions_created"] == 1, "a new session was opened anyway"
    assert cs.wait_no_pending(d, 10) == 0, "the settled REPLACE left an operation pending"
    # A paid deal cannot be checked out again, whatever on_open says.
    for on_open in (pb.ON_OPEN_RETURN_EXISTING, pb.ON_OPEN_REPLACE, pb.ON_OPEN_REJECT):
        status, _ = c.call("CreateCheckout", checkout_request("deal-paid", [item("x", 1, 4200)],
                                                              on_open=on_open))
        expect_error(status, "FAILED_PRECONDITION", "already_paid",
                     f"paid deal, on_open={pb.OnOpen.Name(on_open)}")
    assert fake_stripe.counters()["sessions_created"] == 1
    assert len(cs.list_payments(c, "deal-paid")) == 1


def test_replace_when_stripe_already_expired_the_session(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=30)
    cs.set_stock(c, "exp-sku", 5)
    old = create_ok(c, checkout_request("deal-gone", [item("exp-sku", 2, 100)]))
    fake_stripe.expire_session_at_stripe(old.checkout_session_id)
    new = create_ok(c, checkout_request("deal-gone", [item("exp-sku", 1, 100)],
                                        on_open=pb.ON_OPEN_REPLACE), "REPLACE of an expired session")
    assert new.created and new.payment_id != old.payment_id and new.checkout_session_id
    old_now = cs.get_payment(c, payment_id=old.payment_id)
    assert old_now.status in (pb.PAYMENT_STATUS_CANCELED, pb.PAYMENT_STATUS_EXPIRED), (
        f"the replaced payment is {cs.status_name(old_now.status)}")
    st = cs.get_stock(c, "exp-sku")
    assert (st.on_hand, st.reserved) == (5, 1), f"old reservation not released: {st}"
    assert cs.wait_no_pending(d, 10) == 0


def test_replace_of_a_checkout_whose_session_is_unknown(pay_daemon, fake_stripe, pb):
    """Stripe made the first session but the daemon never heard (answer dropped, then the
    retries dropped): a REPLACE must not leave that session open at Stripe."""
    d = pay_daemon(env={"PAYMENTSD_JANITOR_INTERVAL": "3600"})
    c = d.client(timeout=45)
    fake_stripe.add_fault(kind="apply_then_drop", times=1)
    fake_stripe.add_fault(kind="drop", times=10)
    status, _ = c.call("CreateCheckout", checkout_request("deal-unk", [item("a", 1, 100)]))
    expect_error(status, "UNAVAILABLE", "stripe_unavailable", "every answer dropped")
    assert fake_stripe.counters()["sessions_created"] == 1, "test setup: Stripe made no session"
    pending = cs.get_payment(c, deal_id="deal-unk")
    assert pending.status == pb.PAYMENT_STATUS_CREATED and not pending.checkout_session_id
    fake_stripe.clear_faults()

    new = create_ok(c, checkout_request("deal-unk", [item("a", 2, 100)],
                                        on_open=pb.ON_OPEN_REPLACE), "REPLACE")
    assert new.created and new.payment_id != pending.payment_id
    assert cs.wait_no_pending(d, 10) == 0
    sessions = fake_stripe.sessions()
    open_ids = [s["id"] for s in sessions if s["status"] == "open"]
    assert open_ids == [new.checkout_session_id], (
        f"open sessions at Stripe {open_ids}; only the new payment's "
        f"{new.checkout_session_id} may be open: {[(s['id'], s['status']) for s in sessions]}")
    old_now = cs.get_payment(c, payment_id=pending.payment_id)
    assert old_now.status == pb.PAYMENT_STATUS_CANCELED, cs.status_name(old_now.status)


def test_metadata_keys_stripe_cannot_carry(pay_daemon, fake_stripe, pb):
    """Stripe's form encoding cannot carry "[" or "]" in a metadata key (Stripe refuses
    them): such a key is refused up front (invalid_field metadata), or carried intact."""
    d = pay_daemon()
    c = d.client()
    for n, key in enumerate(("a[b]", "x]", "[y", "k[0][z]")):
        deal = f"deal-mdkey-{n}"
        status, _ = c.call("CreateCheckout", checkout_request(
            deal, metadata={"plain": "1", key: "v"}))
        if status.code == pb.OK:
            pay = cs.get_payment(c, deal_id=deal)
            md = fake_stripe.session(pay.checkout_session_id)["metadata"]
            if "plain" in md:
                assert md.get(key) == "v", f"metadata key {key!r} arrived at Stripe as {md}"
        else:
            expect_error(status, "INVALID_ARGUMENT", "invalid_field",
                         f"metadata key {key!r}: refuse it up front, not at Stripe")
            got = h.status_details(status).get("field", "")
            assert got.startswith("metadata"), f"field {got!r} for a metadata key"


def test_metadata_lengths_counted_as_stripe_counts(pay_daemon, fake_stripe, pb):
    """Lengths Stripe counts in characters (code points): a value of 500 user-perceived
    characters that are 1000 code points is over Stripe's 500. The daemon must refuse it
    (invalid_field metadata), never accept it and then fail at Stripe."""
    d = pay_daemon()
    c = d.client()
    combining = "e\u0301"  # one grapheme, two code points
    cases = [("value", {"k": combining * 500}), ("key", {combining * 40: "v"})]
    for n, (what, md) in enumerate(cases):
        status, _ = c.call("CreateCheckout", checkout_request(f"deal-mdlen-{n}", metadata=md))
        if status.code == pb.OK:
            continue  # carried to Stripe and accepted there (the fixture checks the parameters)
        expect_error(status, "INVALID_ARGUMENT", "invalid_field",
                     f"metadata {what} over Stripe's limit in code points", field="metadata")


@pytest.mark.test_timeout(90)
def test_fifty_concurrent_creates_on_one_deal(pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    req = checkout_request("deal-race", [item("tee", 1, 2500)])

    def one(i):
        with h.Client(d.socket_path, timeout=45) as c:
            status, payload = c.call("CreateCheckout", req, timeout_ms=40000, timeout=45)
            return status, payload

    results = cs.run_concurrently(50, one, timeout=60)
    pay = cs.assert_one_checkout(cs.all_answered_ok(results, "50 concurrent creates"), fake_stripe,
                                 "50 concurrent creates of one deal")
    with d.client() as c:
        listed = cs.list_payments(c, "deal-race")
    assert [(p.payment_id, p.status) for p in listed] == [
        (pay.payment_id, pb.PAYMENT_STATUS_CREATED)], (
        f"ListPayments: {[(p.payment_id, cs.status_name(p.status)) for p in listed]}")


@pytest.mark.test_timeout(90)
def test_twenty_deals_in_parallel(pay_daemon, fake_stripe, pb):
    d = pay_daemon()

    def one(i):
        with h.Client(d.socket_path, timeout=45) as c:
            return c.call("CreateCheckout", checkout_request(f"deal-par-{i}", [item("x", 1, 100 + i)]),
                          timeout_ms=40000, timeout=45)

    results = cs.run_concurrently(20, one, timeout=60)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} calls raised, e.g. {errors[0]!r}"
    bad = [h.describe_status(s) for s, _ in results if s.code != pb.OK]
    assert not bad, f"{len(bad)}/20 calls failed, e.g. {bad[:3]}"
    pays = [pb.Payment.FromString(p) for _, p in results]
    assert all(p.created for p in pays)
    assert [p.deal_id for p in pays] == [f"deal-par-{i}" for i in range(20)]
    assert [p.amount_total for p in pays] == [100 + i for i in range(20)]
    sessions = {p.checkout_session_id for p in pays}
    assert len(sessions) == 20 and "" not in sessions
    assert fake_stripe.counters()["sessions_created"] == 20
    assert {s["id"] for s in fake_stripe.sessions()} == sessions
