"""Helpers for the checkout tests: the in-process fake Stripe and request builders.

No pytest dependency (like paymentsd_harness), so it can be used from a REPL:

    >>> import checkout_support as cs
    >>> fake = cs.FakeStripeHandle.start()
    >>> fake.counters()["sessions_created"]
    0

The fake is the project's own `fakestripe` package (repo root on sys.path),
run in this process on a loopback port; the daemon reaches it through
STRIPE_API_BASE. Everything here talks to it over HTTP, as the daemon does.
"""

from __future__ import annotations

import glob
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Iterable, Sequence

import paymentsd_harness as h

if str(h.REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(h.REPO_ROOT))

from fakestripe.server import FakeStripe  # noqa: E402

SESSIONS_ROUTE = "POST /v1/checkout/sessions"
EXPIRE_ROUTE = "POST /v1/checkout/sessions/{session}/expire"

# What the fake's payment page "collects" from the customer (fakestripe/store.py).
CUSTOMER_PII = ("jenny.rosen@example.com", "Jenny Rosen", "510 Townsend")

DEFAULT_URLS = ("https://shop.example/success", "https://shop.example/cancel")


# ---------------------------------------------------------------------------
# The fake Stripe
# ---------------------------------------------------------------------------

class FakeStripeHandle:
    """A running fake and the HTTP calls tests make to it."""

    def __init__(self, fake: FakeStripe):
        self.fake = fake
        self.url = fake.url
        self.api_key = fake.api_key

    @classmethod
    def start(cls) -> "FakeStripeHandle":
        fs = FakeStripe(port=0, api_key=h.SECRET_KEY,
                        webhook_secret=h.WEBHOOK_SECRET).start()
        return cls(fs)

    def stop(self):
        self.fake.stop()

    # -- raw HTTP ---------------------------------------------------------

    def _http(self, method: str, path: str, body: dict | None = None,
              auth: bool = False, timeout: float = 10.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode("utf-8", "replace")

    def control(self, method: str, path: str, body: dict | None = None):
        status, obj = self._http(method, path, body)
        assert status == 200, f"fake control {method} {path} -> {status}: {obj}"
        return obj

    # -- control routes ---------------------------------------------------

    def counters(self) -> dict:
        return self.control("GET", "/_fake/counters")

    # The janitor's Events API catch-up runs on its own, in the background of every test.
    BACKGROUND_ROUTES = ("GET /v1/events",)

    def call_counts(self) -> dict:
        """Requests per route that a call caused: the counters without the background catch-up."""
        return {route: n for route, n in self.counters()["requests"].items()
                if route not in self.BACKGROUND_ROUTES}

    def requests(self, route: str | None = None) -> list[dict]:
        reqs = self.control("GET", "/_fake/requests")["requests"]
        if route is not None:
            reqs = [r for r in reqs if r["route"] == route]
        return reqs

    def request_count(self, route: str = SESSIONS_ROUTE) -> int:
        return self.counters()["requests"].get(route, 0)

    def add_fault(self, route: str = SESSIONS_ROUTE, kind: str = "status", **kw):
        return self.control("POST", "/_fake/faults", {"route": route, "kind": kind, **kw})

    def clear_faults(self):
        return self.control("DELETE", "/_fake/faults")

    def reset(self):
        return self.control("POST", "/_fake/reset")

    def complete_session(self, session_id: str, paid: bool = True):
        return self.control("POST", f"/_fake/sessions/{session_id}/complete", {"paid": paid})

    def expire_session_at_stripe(self, session_id: str):
        return self.control("POST", f"/_fake/sessions/{session_id}/expire", {})

    # -- webhook forwarding (fakestripe/webhooks.py) ------------------------

    def forward_webhooks(self, url: str | None, secret: str | None = None,
                         retries: int | None = None) -> dict:
        """POST every event emitted from now on to url (None: stop, dropping what is pending),
        signed with secret (default: h.WEBHOOK_SECRET, the fake's), retried up to `retries`
        times (default: the fake's, 10). Returns {"url", "retries", "pending"}."""
        body: dict = {"url": url}
        if secret is not None:
            body["secret"] = secret
        if retries is not None:
            body["retries"] = retries
        return self.control("POST", "/_fake/webhooks", body)

    def stop_forwarding_webhooks(self) -> dict:
        return self.forward_webhooks(None)

    def webhook_deliveries(self, event_id: str | None = None) -> list[dict]:
        """Every forwarding attempt, oldest first: {"event_id", "event_type", "attempt",
        "url", "status" (None on a connection error), "error", "at", "duration_ms",
        "outcome" ("delivered" | "retrying" | "gave_up"), "retry_in"}."""
        path = "/_fake/webhooks/deliveries"
        if event_id is not None:
            path += "?" + urllib.parse.urlencode({"event_id": event_id})
        return self.control("GET", path)["deliveries"]

    def wait_webhooks_idle(self, timeout: float = 15.0) -> list[dict]:
        """Wait until no forwarded event is waiting for (another) attempt; returns
        webhook_deliveries(). Fails after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.control("GET", "/_fake/webhooks/deliveries")
            if out["pending"] == 0:
                return out["deliveries"]
            assert time.monotonic() < deadline, (
                f"{out['pending']} webhook delivery(ies) still pending after {timeout} s: "
                f"{out['deliveries'][-5:]}")
            time.sleep(0.05)

    # -- the API, as the daemon sees it -----------------------------------

    def session(self, session_id: str) -> dict | None:
        status, obj = self._http("GET", f"/v1/checkout/sessions/{urllib.parse.quote(session_id)}",
                                 auth=True)
        if status == 404:
            return None
        assert status == 200, f"GET session {session_id} -> {status}: {obj}"
        return obj

    def sessions(self) -> list[dict]:
        """Every checkout session at the fake (all pages), newest first."""
        out: list[dict] = []
        after = None
        while True:
            q = {"limit": "100"}
            if after:
                q["starting_after"] = after
            status, obj = self._http("GET", "/v1/checkout/sessions?" + urllib.parse.urlencode(q),
                                     auth=True)
            assert status == 200, f"listing sessions -> {status}: {obj}"
            out.extend(obj["data"])
            if not obj["has_more"] or not obj["data"]:
                return out
            after = obj["data"][-1]["id"]

    def sessions_for_deal(self, deal_id: str) -> list[dict]:
        return [s for s in self.sessions() if session_deal(s) == deal_id]

    # -- checks -----------------------------------------------------------

    def assert_param_checks_passed(self):
        c = self.counters()
        assert c["param_check_failures"] == 0, (
            f"the fake refused {c['param_check_failures']} request(s) of the daemon "
            f"in its Stripe parameter check: {c['param_check_failure_details']}")


def session_deal(session: dict) -> str | None:
    """The deal a fake session belongs to: its metadata, else client_reference_id."""
    md = session.get("metadata") or {}
    return md.get("deal_id") or session.get("client_reference_id")


def keys_of(requests: Iterable[dict]) -> list[str | None]:
    return [r["idempotency_key"] for r in requests]


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

def item(sku="tee-red-m", quantity=1, unit_amount=1500, name=None, price_id=""):
    p = h.pb()
    return p.LineItem(sku=sku, name=name if name is not None else f"Item {sku}",
                      quantity=quantity, unit_amount=unit_amount, price_id=price_id)


def checkout_request(deal_id: str, items: Sequence | None = None, *, currency="eur",
                     on_open=None, customer_ref="", metadata: dict | None = None,
                     success_url=DEFAULT_URLS[0], cancel_url=DEFAULT_URLS[1],
                     mode=None, claims: Sequence[str] = ()):
    p = h.pb()
    req = p.CreateCheckoutRequest(
        deal_id=deal_id, customer_ref=customer_ref,
        mode=p.MODE_PAYMENT if mode is None else mode,
        currency=currency, success_url=success_url, cancel_url=cancel_url,
        on_open=p.ON_OPEN_RETURN_EXISTING if on_open is None else on_open)
    for it in (items if items is not None else [item()]):
        req.items.add().CopyFrom(it)
    req.claims.extend(claims)
    for k, v in (metadata or {}).items():
        req.metadata.add(key=k, value=v)
    return req


def total_of(req) -> int:
    return sum(i.quantity * i.unit_amount for i in req.items)


def status_name(value: int) -> str:
    return h.pb().PaymentStatus.Name(value)


def expect_error(status, code: str, reason: str, what: str = "", **details):
    """Assert a non-OK Status with the given code name, reason and details."""
    p = h.pb()
    prefix = f"{what}: " if what else ""
    assert status.code == getattr(p, code) and status.reason == reason, (
        f"{prefix}expected {code} {reason!r}, got {h.describe_status(status)}")
    got = h.status_details(status)
    for k, v in details.items():
        assert got.get(k) == v, (
            f"{prefix}expected detail {k}={v!r}, got {h.describe_status(status)}")


def call_ok(client: h.Client, method: str, msg, what: str = "", **kw):
    status, payload = client.call(method, msg, **kw)
    assert status.code == h.pb().OK, (
        f"{what + ': ' if what else ''}{method} expected OK, got {h.describe_status(status)}")
    return h._reply_type(method).FromString(payload)


def create_ok(client: h.Client, req, what: str = "", **kw):
    return call_ok(client, "CreateCheckout", req, what or f"CreateCheckout {req.deal_id}",
                   **kw)


def get_payment(client: h.Client, deal_id: str = "", payment_id: str = ""):
    p = h.pb()
    return call_ok(client, "GetPayment", p.PaymentRef(deal_id=deal_id, payment_id=payment_id))


def list_payments(client: h.Client, deal_id: str) -> list:
    p = h.pb()
    return list(call_ok(client, "ListPayments", p.PaymentRef(deal_id=deal_id)).payments)


def list_events(client: h.Client, deal_id: str) -> list:
    p = h.pb()
    return list(call_ok(client, "ListEvents", p.PaymentRef(deal_id=deal_id)).events)


def set_stock(client: h.Client, sku: str, on_hand: int, **kw):
    return call_ok(client, "SetStock", h.pb().StockUpdate(sku=sku, on_hand=on_hand), **kw)


def get_stock(client: h.Client, sku: str):
    return call_ok(client, "GetStock", h.pb().StockRef(sku=sku))


def health(client: h.Client):
    return call_ok(client, "Health", h.pb().HealthRequest())


def wait_no_pending(daemon: h.Daemon, timeout: float = 20.0) -> int:
    """Poll Health until pending_operations == 0; returns the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        with h.Client(daemon.socket_path) as c:
            last = health(c).pending_operations
        if last == 0 or time.monotonic() > deadline:
            return last
        time.sleep(0.2)


def all_answered_ok(results: list, what: str) -> list[bytes]:
    """The payloads of concurrent calls (run_concurrently of (status, payload) pairs), each of
    which must have answered OK, none raised."""
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{what}: {len(errors)} calls raised, e.g. {errors[0]!r}"
    bad = [h.describe_status(s) for s, _ in results if s.code != h.pb().OK]
    assert not bad, f"{what}: {len(bad)}/{len(results)} calls failed, e.g. {bad[:3]}"
    return [p for _, p in results]


def assert_one_checkout(payloads: list[bytes], fake: "FakeStripeHandle", what: str):
    """Concurrent CreateCheckout calls of one deal answered one payment, created once, with one
    session at the fake; returns that payment."""
    pays = [h.pb().Payment.FromString(p) for p in payloads]
    ids = {p.payment_id for p in pays}
    assert len(ids) == 1, f"{what}: {len(ids)} different payments"
    created = sum(p.created for p in pays)
    assert created == 1, f"{what}: created=true {created} times, expected exactly once"
    assert {p.checkout_session_id for p in pays} == {pays[0].checkout_session_id}
    counters = fake.counters()
    assert counters["sessions_created"] == 1, f"{what}: {counters['sessions_created']} sessions at the fake"
    return pays[0]


def run_concurrently(n: int, fn: Callable[[int], object], timeout: float = 60.0) -> list:
    """Run fn(i) for i in range(n) on n threads released together by a barrier.

    Returns the results in order; an exception in a thread is returned as
    the exception object (the caller asserts on it).
    """
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        try:
            barrier.wait(timeout)
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not stuck, f"{len(stuck)} of {n} concurrent calls did not finish in {timeout} s"
    return results


# ---------------------------------------------------------------------------
# Privacy (guarantee 11): searching the daemon's outputs and files for what must not be there

PHONE = "4155550100"
CLIENT_SECRET_RE = re.compile(rb"_secret_[A-Za-z0-9]{8,}")


def db_files(d: h.Daemon) -> dict[str, bytes]:
    """The bytes of the SQLite file and its -wal/-shm companions."""
    assert not h.is_postgres(d.db_path), "db_files reads a SQLite file: mark the test sqlite_only"
    out = {}
    for path in sorted(glob.glob(glob.escape(d.db_path) + "*")):
        with open(path, "rb") as f:
            out[path] = f.read()
    return out


def db_tables(d: h.Daemon) -> dict[str, bytes]:
    """Every value of every table of the daemon's PostgreSQL database, as bytes per table
    (text as UTF-8, bytea as is, anything else as its str): what a search of the SQLite
    file's bytes (db_files) is on PostgreSQL, whose files are the server's. Read-only
    (db_rows); the daemon may be running."""
    assert h.is_postgres(d.db_path), "db_tables reads a PostgreSQL database: use db_files"
    tables = d.db_rows(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        " ORDER BY 1, 2")
    assert tables, f"no tables in {d.db_path}"

    def as_bytes(v) -> bytes:
        if v is None:
            return b""
        if isinstance(v, bytes):
            return v
        return (v if isinstance(v, str) else str(v)).encode("utf-8")

    out = {}
    for schema, table in tables:
        name = f'"{schema}"."{table}"'
        rows = d.db_rows(f"SELECT * FROM {name}")
        out[f"table {name}"] = b"\n".join(b"\x00".join(as_bytes(v) for v in row) for row in rows)
    return out


def leaks(needles, where: str, data: bytes) -> list[str]:
    """Which needles (UTF-8 or UTF-16) or client_secret-shaped values appear in data."""
    hits = [f"{n[:14]}... in {where}" for n in needles
            if any(enc in data for enc in (n.encode("utf-8"), n.encode("utf-16-le")))]
    m = CLIENT_SECRET_RE.search(data)
    if m:
        hits.append(f"a client_secret-shaped value ({m.group()[:16]}...) in {where}")
    return hits


# ---------------------------------------------------------------------------
# Crash points


def crash_run(d: h.Daemon, crash_point: str, call: Callable[[h.Client], object],
              events_down: "FakeStripeHandle | None" = None) -> str:
    """Starts `d` armed with PAYMENTSD_CRASH_AT=crash_point, makes `call` (which must reach the
    point), checks the process ended there with status 137, and disarms it for the restart.
    Returns what the call answered, for assertion messages.

    `events_down`: the fake whose Events API fails during the crash run, so that the janitor's
    catch-up at start-up does not reach an event's crash point before `call` does."""
    d.env["PAYMENTSD_CRASH_AT"] = crash_point
    if events_down is not None:
        events_down.add_fault("GET /v1/events", "status", status=500, times=1000)
    try:
        return _crash_run(d, crash_point, call)
    finally:
        if events_down is not None:
            events_down.clear_faults()


def _crash_run(d: h.Daemon, crash_point: str, call: Callable[[h.Client], object]) -> str:
    import subprocess
    d.start()
    answer = None
    try:
        with h.Client(d.socket_path, timeout=30) as c:
            status = call(c)
            answer = h.describe_status(status)
    except (h.ConnectionClosed, OSError) as e:
        answer = f"connection ended ({type(e).__name__})"
    try:
        rc = d.proc.wait(15)
    except subprocess.TimeoutExpired:
        rc = None
    assert rc is not None, (
        f"the daemon did not stop at crash point {crash_point} (the call answered: {answer})")
    assert rc in (137, -9), f"crash at {crash_point}: exit status {rc}, expected 137"
    assert f"crash point reached: {crash_point}" in d.stderr_text(), (
        f"exit {rc}, but stderr does not say crash point {crash_point} was reached")
    del d.env["PAYMENTSD_CRASH_AT"]
    return answer


def crash_points() -> list[str]:
    """The names `paymentsd crash-points` lists (empty if the binary is not built yet, so
    that collection still works; the tests then fail on the empty list)."""
    path = h.binary_path()
    if not path.exists():
        return []
    try:
        res = subprocess.run([str(path), "crash-points"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [l.strip() for l in res.stdout.splitlines() if l.strip()]
