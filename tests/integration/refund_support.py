"""Helpers for the RefundPayment tests (guarantee 7). No pytest dependency.

A paid payment is made the way a customer makes one: a checkout, the
customer paying at the fake, and the fake's `checkout.session.completed`
delivered to HandleStripeEvent. Refunds at the fake are read back through
its API (`GET /v1/refunds`), as the daemon would see them, and its request
log (`POST /v1/refunds` with their Idempotency-Key and parameters).

The daemon's side: RefundPayment answers a `Refund`; `GetPayment` lists the
payment's refunds (`Payment.refunds`, oldest first) and its
`amount_refunded`; `ListEvents` the audit trail.
"""

from __future__ import annotations

import re
import time
import urllib.parse

import checkout_support as cs
import paymentsd_harness as h
import webhook_support as ws

REFUNDS_ROUTE = "POST /v1/refunds"
REFUND_ID_RE = re.compile(r"^rfd_[A-Za-z0-9]{24}$")
STRIPE_REASONS = {"REFUND_REASON_REQUESTED_BY_CUSTOMER": "requested_by_customer",
                  "REFUND_REASON_DUPLICATE": "duplicate",
                  "REFUND_REASON_FRAUDULENT": "fraudulent"}
# Generous: a call that retries Stripe with backoff may take a few seconds.
CALL_TIMEOUT = 45.0


# ---------------------------------------------------------------------------
# Requests and calls


def refund_request(deal_id: str = "", payment_id: str = "", amount: int = 0, reason=None,
                   restock: bool = False):
    p = h.pb()
    return p.RefundRequest(
        deal_id=deal_id, payment_id=payment_id, amount=amount,
        reason=p.REFUND_REASON_REQUESTED_BY_CUSTOMER if reason is None else reason,
        restock=restock)


def refund(client: h.Client, key: str | None, *, deal_id: str = "", payment_id: str = "",
           amount: int = 0, reason=None, restock: bool = False, timeout: float = CALL_TIMEOUT,
           **kw):
    """RefundPayment: (Status, Refund or None, raw payload)."""
    p = h.pb()
    req = refund_request(deal_id, payment_id, amount, reason, restock)
    status, payload = client.call("RefundPayment", req, idempotency_key=key or "",
                                  timeout=timeout, **kw)
    return status, (p.Refund.FromString(payload) if status.code == p.OK else None), payload


def refund_ok(client: h.Client, key: str, what: str = "", **kw):
    """RefundPayment that must answer OK; returns the Refund."""
    status, ref, _ = refund(client, key, **kw)
    assert status.code == h.pb().OK, (
        f"{what + ': ' if what else ''}RefundPayment expected OK, got {h.describe_status(status)}")
    return ref


def reconcile(client: h.Client):
    return cs.call_ok(client, "Reconcile", h.pb().ReconcileRequest(), "Reconcile",
                      timeout=CALL_TIMEOUT)


# ---------------------------------------------------------------------------
# Names


def refund_status(value: int) -> str:
    return h.pb().RefundStatus.Name(value).removeprefix("REFUND_STATUS_")


def pay_status(value: int) -> str:
    return h.pb().PaymentStatus.Name(value).removeprefix("PAYMENT_STATUS_")


def describe_refund(r) -> str:
    return (f"{r.refund_id or '?'}:{r.amount}:{refund_status(r.status)}"
            f"{':' + r.stripe_refund_id if r.stripe_refund_id else ''}"
            f"{' failure=' + r.failure_reason if r.failure_reason else ''}")


def describe_payment(pay) -> str:
    return (f"{pay.payment_id} {pay_status(pay.status)} total={pay.amount_total} "
            f"refunded={pay.amount_refunded} refunds=[{', '.join(describe_refund(r) for r in pay.refunds)}]")


# ---------------------------------------------------------------------------
# A paid payment


def paid_payment(client: h.Client, fake: cs.FakeStripeHandle, deal_id: str, sku: str,
                 quantity: int = 1, unit_amount: int = 1000, set_stock: int | None = None):
    """Opens a checkout, pays it at the fake, delivers `completed`: returns the PAID Payment."""
    p = h.pb()
    if set_stock is not None:
        cs.set_stock(client, sku, set_stock)
    pay = ws.open_checkout(client, deal_id, sku, quantity, unit_amount)
    fake.complete_session(pay.checkout_session_id, paid=True)
    body, sig = ws.session_delivery(fake, pay.checkout_session_id, ws.COMPLETED)
    ws.deliver_ok(client, body, sig, f"test setup: completed for {deal_id}")
    got = cs.get_payment(client, payment_id=pay.payment_id)
    assert got.status == p.PAYMENT_STATUS_PAID and got.payment_intent_id, (
        f"test setup: {deal_id} is {pay_status(got.status)} after its completed event")
    assert got.amount_total == quantity * unit_amount and got.amount_refunded == 0, (
        f"test setup: {describe_payment(got)}")
    return got


# ---------------------------------------------------------------------------
# The fake's side


def fake_refunds(fake: cs.FakeStripeHandle, payment_intent: str | None = None) -> list[dict]:
    """Refunds at the fake (all pages), oldest first, optionally of one payment intent."""
    q = {"limit": "100"}
    if payment_intent:
        q["payment_intent"] = payment_intent
    out: list[dict] = []
    while True:
        status, obj = fake._http("GET", "/v1/refunds?" + urllib.parse.urlencode(q), auth=True)
        assert status == 200, f"GET /v1/refunds -> {status}: {obj}"
        out.extend(obj["data"])
        if not obj["has_more"] or not obj["data"]:
            break
        q["starting_after"] = obj["data"][-1]["id"]
    return list(reversed(out))


def concurrent_refund_answers(results: list, amount: int, what: str) -> tuple[list, list]:
    """(refunds answered OK, statuses refused) of concurrent RefundPayment calls (run_concurrently
    of (status, refund) pairs): none raised, every refusal is the cap's or an already-refunded
    payment's, every OK one a SUCCEEDED refund of `amount` of its own."""
    p = h.pb()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{what}: {len(errors)} calls raised, e.g. {errors[0]!r}"
    ok = [ref for status, ref in results if status.code == p.OK]
    refused = [status for status, _ in results if status.code != p.OK]
    bad = [h.describe_status(s) for s in refused
           if (s.code, s.reason) not in ((p.OUT_OF_RANGE, "refund_exceeds_remaining"),
                                         (p.FAILED_PRECONDITION, "already_refunded"))]
    assert not bad, f"{what} answered other than OK / exceeds / already: {bad}"
    assert all(r.status == p.REFUND_STATUS_SUCCEEDED and r.amount == amount for r in ok), (
        [describe_refund(r) for r in ok])
    assert len({r.refund_id for r in ok}) == len(ok), "two calls answered one refund row"
    return ok, refused


def refund_posts(fake: cs.FakeStripeHandle) -> list[dict]:
    return fake.requests(REFUNDS_ROUTE)


def describe_fake(refunds: list[dict]) -> str:
    return "[" + ", ".join(
        f"{r['id'][-6:]}:{r['amount']}:{r['status']}:md={(r.get('metadata') or {}).get('refund_id', '-')}"
        for r in refunds) + "]"


def live_sum(refunds: list[dict]) -> int:
    """What is taken from the charge at the fake: every refund that did not fail."""
    return sum(r["amount"] for r in refunds if r["status"] not in ("failed", "canceled"))


def succeeded_sum(refunds: list[dict]) -> int:
    return sum(r["amount"] for r in refunds if r["status"] == "succeeded")


def resolve_at_stripe(fake: cs.FakeStripeHandle, stripe_refund_id: str, status: str,
                      failure_reason: str | None = None) -> dict:
    body = {"status": status}
    if failure_reason:
        body["failure_reason"] = failure_reason
    return fake.control("POST", f"/_fake/refunds/{stripe_refund_id}/resolve", body)


def dashboard_refund(fake: cs.FakeStripeHandle, payment_intent: str, amount: int | None) -> dict:
    return fake.control("POST", "/_fake/refunds", {"payment_intent": payment_intent,
                                                   "amount": amount})


def refund_events(fake: cs.FakeStripeHandle, stripe_refund_id: str,
                  types: tuple[str, ...] = ("refund.created", "charge.refunded")) -> list[dict]:
    """Events at the fake about one refund (oldest first): refund.* events whose object is
    the refund, and charge.refunded events whose charge lists it."""
    out = []
    for e in ws.fake_events(fake):
        if e["type"] not in types:
            continue
        obj = e["data"]["object"]
        if obj.get("object") == "refund" and obj.get("id") == stripe_refund_id:
            out.append(e)
        elif obj.get("object") == "charge" and stripe_refund_id in {
                r["id"] for r in (obj.get("refunds") or {}).get("data", [])}:
            out.append(e)
    return out


def deliver_events(client: h.Client, fake: cs.FakeStripeHandle, events: list[dict],
                   what: str) -> list:
    """Delivers each event (the fake's body and signature); returns the outcomes' names."""
    outcomes = []
    for e in events:
        body, sig = ws.delivery(fake, e["id"])
        res = ws.deliver_ok(client, body, sig, f"{what}: {e['type']} {e['id']}")
        outcomes.append(ws.outcome_name(res.outcome).removeprefix("EVENT_OUTCOME_"))
    return outcomes


# ---------------------------------------------------------------------------
# The daemon's side


def payment(client: h.Client, payment_id: str):
    return cs.get_payment(client, payment_id=payment_id)


def kinds(client: h.Client, deal_id: str) -> list[str]:
    return [e.kind for e in cs.list_events(client, deal_id)]


def wait_refunds_settled(daemon: h.Daemon, payment_id: str, timeout: float = 20.0,
                         reconcile_every: float = 2.0):
    """Polls GetPayment (calling Reconcile now and then) until none of the payment's refunds
    is PENDING; returns the last Payment seen (whatever it is: the caller asserts)."""
    p = h.pb()
    deadline = time.monotonic() + timeout
    next_reconcile = time.monotonic()
    while True:
        with h.Client(daemon.socket_path, timeout=CALL_TIMEOUT) as c:
            if time.monotonic() >= next_reconcile:
                c.call("Reconcile", p.ReconcileRequest(), timeout=CALL_TIMEOUT)
                next_reconcile = time.monotonic() + reconcile_every
            pay = cs.get_payment(c, payment_id=payment_id)
        if all(r.status != p.REFUND_STATUS_PENDING for r in pay.refunds):
            return pay
        if time.monotonic() > deadline:
            return pay
        time.sleep(0.3)


def assert_agrees_with_stripe(client: h.Client, fake: cs.FakeStripeHandle, payment_id: str,
                              ctx: str = "", *, settled: bool = True):
    """The daemon's refunds of a payment and the fake's refunds of its payment intent agree.

    - every refund the daemon made (metadata refund_id) is at the fake at most once;
    - every refund at the fake is known to the daemon (by its stripe refund id) once;
    - amounts and (when settled) statuses match; the sums match: amount_refunded is the sum
      of SUCCEEDED refunds, and never more than amount_total;
    - the payment's status follows from amount_refunded.
    Returns (Payment, fake refunds).
    """
    p = h.pb()
    pay = cs.get_payment(client, payment_id=payment_id)
    at_fake = fake_refunds(fake, pay.payment_intent_id)
    where = (f"{ctx + ': ' if ctx else ''}daemon {describe_payment(pay)}; "
             f"fake {describe_fake(at_fake)}")

    by_md: dict[str, list[dict]] = {}
    for r in at_fake:
        md = (r.get("metadata") or {}).get("refund_id")
        if md:
            by_md.setdefault(md, []).append(r)
    twice = {k: len(v) for k, v in by_md.items() if len(v) > 1}
    assert not twice, f"one refund row refunded more than once at Stripe {twice}: {where}"
    ours = {r.refund_id for r in pay.refunds}
    unknown_md = sorted(set(by_md) - ours)
    assert not unknown_md, (
        f"refund(s) at Stripe made by the daemon for rows it does not list {unknown_md}: {where}")

    stripe_ids = [r.stripe_refund_id for r in pay.refunds if r.stripe_refund_id]
    assert len(stripe_ids) == len(set(stripe_ids)), (
        f"one Stripe refund recorded twice by the daemon: {where}")
    fake_by_id = {r["id"]: r for r in at_fake}
    missing = [r["id"] for r in at_fake if r["id"] not in stripe_ids]
    assert not (settled and missing), f"refund(s) at Stripe the daemon has not recorded {missing}: {where}"
    for r in pay.refunds:
        if not r.stripe_refund_id:
            if settled:
                assert r.status == p.REFUND_STATUS_FAILED, (
                    f"refund {describe_refund(r)} has no Stripe refund but is not FAILED: {where}")
                assert r.refund_id not in by_md, (
                    f"refund {r.refund_id} is FAILED at the daemon but exists at Stripe: {where}")
            continue
        f = fake_by_id.get(r.stripe_refund_id)
        assert f is not None, (
            f"the daemon's refund {describe_refund(r)} names a Stripe refund the fake does "
            f"not have for this payment: {where}")
        assert f["amount"] == r.amount, (
            f"refund {r.refund_id}: {r.amount} at the daemon, {f['amount']} at Stripe: {where}")
        if settled:
            want = {"succeeded": p.REFUND_STATUS_SUCCEEDED, "pending": p.REFUND_STATUS_PENDING,
                    "requires_action": p.REFUND_STATUS_PENDING,
                    "failed": p.REFUND_STATUS_FAILED, "canceled": p.REFUND_STATUS_FAILED}[f["status"]]
            assert r.status == want, (
                f"refund {r.refund_id} is {refund_status(r.status)} at the daemon, "
                f"{f['status']} at Stripe: {where}")

    succeeded = sum(r.amount for r in pay.refunds if r.status == p.REFUND_STATUS_SUCCEEDED)
    assert pay.amount_refunded == succeeded, (
        f"amount_refunded {pay.amount_refunded} is not the sum of SUCCEEDED refunds "
        f"{succeeded}: {where}")
    live = sum(r.amount for r in pay.refunds if r.status != p.REFUND_STATUS_FAILED)
    assert live <= pay.amount_total, (
        f"refunds (not failed) add up to {live}, more than the {pay.amount_total} paid: {where}")
    assert live_sum(at_fake) <= pay.amount_total, f"over-refunded at Stripe: {where}"
    if settled:
        assert succeeded == succeeded_sum(at_fake), (
            f"succeeded refunds: {succeeded} at the daemon, {succeeded_sum(at_fake)} at "
            f"Stripe: {where}")
        assert live == live_sum(at_fake), (
            f"refunds not failed: {live} at the daemon, {live_sum(at_fake)} at Stripe: {where}")
    if pay.amount_refunded == 0:
        want_status = {p.PAYMENT_STATUS_PAID}
    elif pay.amount_refunded < pay.amount_total:
        want_status = {p.PAYMENT_STATUS_PARTIALLY_REFUNDED}
    else:
        want_status = {p.PAYMENT_STATUS_REFUNDED}
    assert pay.status in want_status, (
        f"payment is {pay_status(pay.status)} with amount_refunded {pay.amount_refunded} "
        f"of {pay.amount_total}: {where}")
    return pay, at_fake


def assert_one_key_per_row(fake: cs.FakeStripeHandle, ctx: str = "") -> dict[str, set]:
    """Every POST /v1/refunds of one refund row carried one Idempotency-Key, the one derived
    from the row (paymentsd-<refund_id>-refund); returns {refund_id: {keys}}."""
    keys: dict[str, set] = {}
    for r in refund_posts(fake):
        md = ((r.get("params") or {}).get("metadata") or {}).get("refund_id", "?")
        keys.setdefault(md, set()).add(r["idempotency_key"])
    for rid, ks in keys.items():
        assert ks == {f"paymentsd-{rid}-refund"}, (
            f"{ctx + ': ' if ctx else ''}POST /v1/refunds for refund row {rid} carried "
            f"Idempotency-Key(s) {sorted(map(str, ks))}, expected only 'paymentsd-{rid}-refund'")
    return keys
