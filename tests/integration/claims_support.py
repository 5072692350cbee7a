"""Helpers for the claim and subscription tests (guarantees 2 and 6). No pytest dependency.

A claim is a unique name (`slug:alice`) a checkout holds for its deal from the
moment it opens; `GetClaim` says FREE, HELD or TAKEN. A subscription checkout
(`mode = MODE_SUBSCRIPTION`) names Stripe prices; the fake treats any
`price_...` id as a recurring price.

The invariants the crash and concurrency tests check are read from both
sides: the daemon's SQLite file (opened read-only, `mode=ro`) and the fake
Stripe's sessions and request log.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from typing import Iterable, Sequence

import checkout_support as cs
import paymentsd_harness as h
import webhook_support as ws

CLAIM_STATES = ("FREE", "HELD", "TAKEN")
REFUNDS_ROUTE = "POST /v1/refunds"
MONTHLY = "price_monthly_basic"
ANNUAL = "price_annual_basic"


# ---------------------------------------------------------------------------
# Names


def claim_state(value: int) -> str:
    return h.pb().ClaimState.Name(value).removeprefix("CLAIM_STATE_")


def pay_status(value: int) -> str:
    return h.pb().PaymentStatus.Name(value).removeprefix("PAYMENT_STATUS_")


def describe_claim(claim) -> str:
    return (f"{claim.key}: {claim_state(claim.state)} deal={claim.deal_id!r} "
            f"expires_at={claim.expires_at}")


# ---------------------------------------------------------------------------
# Calls


def get_claim(client: h.Client, key: str, what: str = ""):
    """GetClaim that must answer OK; returns the Claim."""
    return cs.call_ok(client, "GetClaim", h.pb().ClaimRef(key=key), what or f"GetClaim {key}")


def release_claim(client: h.Client, key: str, **kw):
    """ReleaseClaim: (Status, Claim or None)."""
    p = h.pb()
    status, payload = client.call("ReleaseClaim", p.ClaimRef(key=key), **kw)
    return status, (p.Claim.FromString(payload) if status.code == p.OK else None)


def expect_claim(client: h.Client, key: str, state: str, deal_id: str = "",
                 expires_at: int | None = None, what: str = ""):
    """GetClaim(key) must say `state` (FREE/HELD/TAKEN) for `deal_id`; returns the Claim."""
    got = get_claim(client, key, what)
    prefix = f"{what}: " if what else ""
    assert got.key == key, f"{prefix}GetClaim({key!r}) answered key {got.key!r}"
    assert (claim_state(got.state), got.deal_id) == (state, deal_id), (
        f"{prefix}GetClaim({key!r}) expected {state} deal={deal_id!r}, got {describe_claim(got)}")
    if expires_at is not None:
        assert got.expires_at == expires_at, (
            f"{prefix}GetClaim({key!r}) expires_at {got.expires_at}, expected {expires_at}")
    return got


def checkout(deal_id: str, claims: Sequence[str] = (), sku: str = "claim-sku", quantity: int = 1,
             unit_amount: int = 1000, **kw):
    """A payment-mode CreateCheckoutRequest for one item, holding `claims`."""
    return cs.checkout_request(deal_id, [cs.item(sku, quantity, unit_amount)], claims=claims, **kw)


def sub_item(price_id: str, quantity: int = 1, sku: str | None = None, name: str | None = None):
    return cs.item(sku or f"plan-{price_id.removeprefix('price_')}"[:128], quantity, 0,
                   name=name or f"Plan {price_id}", price_id=price_id)


def sub_request(deal_id: str, customer_ref: str, prices: Sequence = (MONTHLY,), *, on_open=None,
                claims: Sequence[str] = (), **kw):
    """A subscription CreateCheckoutRequest: `prices` are price ids or (price_id, quantity)."""
    items = [sub_item(p) if isinstance(p, str) else sub_item(p[0], p[1]) for p in prices]
    return cs.checkout_request(deal_id, items, mode=h.pb().MODE_SUBSCRIPTION,
                               customer_ref=customer_ref, on_open=on_open, claims=claims, **kw)


def create(client: h.Client, req, **kw):
    """CreateCheckout: (Status, Payment or None)."""
    p = h.pb()
    status, payload = client.call("CreateCheckout", req, **kw)
    return status, (p.Payment.FromString(payload) if status.code == p.OK else None)


# ---------------------------------------------------------------------------
# What happens at Stripe, and the webhooks that say so


def pay_by_webhook(client: h.Client, fake: cs.FakeStripeHandle, pay, what: str = ""):
    """The customer pays at the fake; its checkout.session.completed is delivered."""
    fake.complete_session(pay.checkout_session_id, paid=True)
    body, sig = ws.session_delivery(fake, pay.checkout_session_id, ws.COMPLETED)
    return ws.deliver_ok(client, body, sig, what or "checkout.session.completed")


def expire_by_webhook(client: h.Client, fake: cs.FakeStripeHandle, pay, what: str = ""):
    """Stripe expires the session on its own and says so."""
    fake.expire_session_at_stripe(pay.checkout_session_id)
    body, sig = ws.session_delivery(fake, pay.checkout_session_id, ws.EXPIRED)
    return ws.deliver_ok(client, body, sig, what or "checkout.session.expired")


def pay_late(client: h.Client, fake: cs.FakeStripeHandle, pay):
    """The customer's payment lands on a session that was already expired (the fake's late flag)."""
    fake.control("POST", f"/_fake/sessions/{pay.checkout_session_id}/complete",
                 {"paid": True, "late": True})
    body, sig = ws.session_delivery(fake, pay.checkout_session_id, ws.COMPLETED)
    return ws.deliver_ok(client, body, sig, "late checkout.session.completed")


def fake_refunds(fake: cs.FakeStripeHandle, payment_intent: str) -> list[dict]:
    status, obj = fake._http("GET", f"/v1/refunds?payment_intent={payment_intent}&limit=100",
                             auth=True)
    assert status == 200, f"GET /v1/refunds -> {status}: {obj}"
    return obj["data"]


def wait_for_audit(daemon: h.Daemon, deal_id: str, kind: str, timeout: float = 15.0) -> list:
    """Poll ListEvents until an event of `kind` is there; returns the deal's events."""
    deadline = time.monotonic() + timeout
    while True:
        with h.Client(daemon.socket_path, timeout=30) as c:
            events = cs.list_events(c, deal_id)
        if any(e.kind == kind for e in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


# ---------------------------------------------------------------------------
# The daemon's database, read-only


def db_query(daemon: h.Daemon, sql: str, *args) -> list[tuple]:
    """Rows of a read-only query on the daemon's database, on either store (the daemon may be
    running)."""
    return daemon.db_rows(sql, *args)


def db_copy(daemon: h.Daemon, dest_dir: str) -> str:
    """A copy of the stopped daemon's SQLite file (with its -wal), for experiments on the copy."""
    assert not h.is_postgres(daemon.db_path), "db_copy copies a SQLite file: mark the test sqlite_only"
    assert not daemon.alive(), "db_copy needs the daemon stopped"
    dest = f"{dest_dir}/copy.db"
    for suffix in ("", "-wal"):
        try:
            shutil.copyfile(daemon.db_path + suffix, dest + suffix)
        except FileNotFoundError:
            pass
    return dest


def try_write_rolled_back(daemon: h.Daemon, scratch_dir: str, sql: str, *params) -> bool:
    """Tries one write behind the stopped daemon's back and says whether the database refused
    it as a duplicate (a UNIQUE constraint or index): True refused, False it would have taken
    it. Any other error is raised. Nothing reaches the daemon's data, and each try starts from
    the daemon's own state: on SQLite the write goes to a fresh copy of the file (db_copy, in
    scratch_dir) inside a transaction that is rolled back; on PostgreSQL, where the
    database is shared, into a transaction on it that is rolled back. `?` placeholders on
    both stores."""
    if h.is_postgres(daemon.db_path):
        import psycopg

        class _RollBack(Exception):
            pass

        with psycopg.connect(daemon.db_path, autocommit=True, connect_timeout=10) as conn:
            try:
                with conn.transaction():
                    conn.execute(h._pg_placeholders(sql), params)
                    raise _RollBack
            except psycopg.errors.UniqueViolation:
                return True
            except _RollBack:
                return False
    import sqlite3
    conn = sqlite3.connect(db_copy(daemon, scratch_dir), isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN")
        try:
            conn.execute(sql, params)
        except sqlite3.IntegrityError as e:
            if "UNIQUE" not in str(e):
                raise
            return True
        finally:
            conn.execute("ROLLBACK")
        return False
    finally:
        conn.close()


def claim_rows(daemon: h.Daemon) -> list[tuple]:
    """(key, payment_id, deal_id, claim state, payment status) for every claim row."""
    return db_query(daemon, """
        SELECT c.key, c.payment_id, c.deal_id, c.state, p.status
        FROM claims c JOIN payments p USING (payment_id) ORDER BY c.rowid""")


def payment_rows(daemon: h.Daemon) -> list[dict]:
    rows = db_query(daemon, """
        SELECT payment_id, deal_id, customer_ref, mode, status, checkout_session_id
        FROM payments ORDER BY created_at, rowid""")
    return [dict(zip(("payment_id", "deal_id", "customer_ref", "mode", "status", "session"), r))
            for r in rows]


# ---------------------------------------------------------------------------
# Invariants


def claim_invariant_violations(daemon: h.Daemon) -> list[str]:
    """Guarantee 6 as stored: a HELD name has its open (CREATED) payment, a CREATED payment holds
    every name it asked for, a TAKEN name belongs to a paid payment, one holder per name."""
    bad = []
    holders: dict[str, list] = defaultdict(list)
    for key, pid, deal, state, pstatus in claim_rows(daemon):
        if state in ("HELD", "TAKEN"):
            holders[key].append((deal, pid, state))
        if state == "HELD" and pstatus != "CREATED":
            bad.append(f"{key} HELD for payment {pid} ({deal}) that is {pstatus}")
        if pstatus == "CREATED" and state != "HELD":
            bad.append(f"{key} {state} for payment {pid} ({deal}) that is CREATED (must hold it)")
        if state == "TAKEN" and pstatus not in ("PAID", "PARTIALLY_REFUNDED", "REFUNDED"):
            bad.append(f"{key} TAKEN for payment {pid} ({deal}) that is {pstatus}")
    for key, hs in holders.items():
        if len(hs) > 1:
            bad.append(f"{key} has {len(hs)} holders: {hs}")
    return bad


def open_sessions(fake: cs.FakeStripeHandle) -> list[dict]:
    return [s for s in fake.sessions() if s["status"] == "open"]


def session_customer(session: dict) -> str | None:
    return (session.get("metadata") or {}).get("customer_ref")


def session_invariant_violations(daemon: h.Daemon, fake: cs.FakeStripeHandle) -> list[str]:
    """Guarantees 2 and 3 across daemon and fake: every open session at the fake is the session
    of a CREATED payment; at most one open subscription session (and one CREATED subscription
    payment) per customer."""
    bad = []
    payments = payment_rows(daemon)
    created_sessions = {p["session"] for p in payments if p["status"] == "CREATED" and p["session"]}
    opened = open_sessions(fake)
    for s in opened:
        if s["id"] not in created_sessions:
            owner = next((p for p in payments if p["session"] == s["id"]), None)
            bad.append(f"open session {s['id'][-10:]} ({s['mode']}, deal {cs.session_deal(s)}) "
                       f"unknown to the daemon or not wanted: its payment is "
                       f"{owner and owner['status']}")
    by_customer: dict[str, list] = defaultdict(list)
    for s in opened:
        if s["mode"] == "subscription":
            by_customer[session_customer(s) or "?"].append(s["id"][-10:])
    for cust, ids in by_customer.items():
        if len(ids) > 1:
            bad.append(f"customer {cust} has {len(ids)} open subscription sessions at the fake: {ids}")
    created_subs: dict[str, list] = defaultdict(list)
    for p in payments:
        if p["status"] == "CREATED" and p["mode"] == "SUBSCRIPTION":
            created_subs[p["customer_ref"]].append(p["payment_id"])
    for cust, ids in created_subs.items():
        if len(ids) > 1:
            bad.append(f"customer {cust} has {len(ids)} CREATED subscription payments: {ids}")
    return bad


def max_open_per_customer_in_log(fake: cs.FakeStripeHandle, customer_ref: str) -> tuple[int, list]:
    """Replays the fake's request log: how many subscription sessions of the customer were open
    at once at most (a session opens with its successful, non-replayed create; closes with a
    successful expire). Returns (maximum, the timeline for messages)."""
    sessions = {s["id"]: s for s in fake.sessions()}
    by_payment = {(s.get("metadata") or {}).get("payment_id"): s["id"] for s in sessions.values()}
    open_now: set[str] = set()
    most, timeline = 0, []
    for r in fake.requests():
        if r["status"] != 200 or r["replayed"]:
            continue
        if r["route"] == cs.SESSIONS_ROUTE:
            params = r["params"] or {}
            if (params.get("metadata") or {}).get("customer_ref") != customer_ref:
                continue
            sid = by_payment.get(params["metadata"].get("payment_id"))
            open_now.add(sid)
            timeline.append(f"+{(sid or '?')[-6:]}")
        elif r["route"] == cs.EXPIRE_ROUTE:
            sid = r["path"].split("/")[-2]
            if sid in open_now:
                open_now.discard(sid)
                timeline.append(f"-{sid[-6:]}")
        most = max(most, len(open_now))
    return most, timeline


def claims_of(payments: Iterable) -> dict[str, list[str]]:
    return {p.payment_id: list(p.claims) for p in payments}
