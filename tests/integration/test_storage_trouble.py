"""Storage trouble callers can act on (issue 11, items 4 and 5; protocol.md section 4, last row of
"Reasons that callers rely on"; guarantee 14 of behaviour.md).

- A write lock held by another process (`BEGIN IMMEDIATE` from Python's sqlite3): a write answers
  `UNAVAILABLE database_busy` within the smaller of its deadline and PAYMENTSD_BUSY_TIMEOUT_MS; a
  write whose deadline passed while it waited in the writer queue is not run (`DEADLINE_EXCEEDED`,
  nothing changed); a waiting write proceeds once the lock goes; after the lock is released every
  call works.
- A full disk (a 4 MiB tmpfs holding the database, filled up): writes answer `UNAVAILABLE`
  (`database_full`, or `database_unavailable` for an I/O error), nothing is half-done (stock adds up,
  no CREATED checkout without its one open session, a refused write changed nothing), and everything
  works again once space is freed.
- The database unlinked under the running daemon: the next write and every later one answer
  `UNAVAILABLE database_unavailable`, Health is NOT_SERVING, the error is logged once, and nothing
  was acknowledged that a restart then lacks. A different file moved over the path is detected too.
- payments.db, -wal and -shm made immutable (`chattr +i`, how root meets a read-only file):
  `UNAVAILABLE database_read_only` (or `database_unavailable`), the daemon keeps running (no SIGBUS),
  nothing refused is applied, writes work again once the flag is cleared.
- Never `INTERNAL`; the log line names the condition and never carries SQL text; Health is
  NOT_SERVING while writes fail and SERVING again after recovery (busy, full).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest

import checkout_support as cs
import paymentsd_harness as h
import refund_support as rs
import webhook_support as ws
from checkout_support import checkout_request, create_ok, item

STORAGE_REASONS = ("database_busy", "database_full", "database_read_only", "database_unavailable")
SQL_WORDS = re.compile(r"\b(INSERT|UPDATE|SELECT|BEGIN)\b")
REMOVED_RE = re.compile(r"removed or replaced")


# ---------------------------------------------------------------------------
# Helpers


def _timed(c: h.Client, method: str, msg, **kw):
    """One call: (Status, payload, seconds it took)."""
    t0 = time.monotonic()
    status, payload = c.call(method, msg, **kw)
    return status, payload, time.monotonic() - t0


def _expect(status, code: str, reasons, what: str):
    p = h.pb()
    reasons = (reasons,) if isinstance(reasons, str) else tuple(reasons)
    assert status.code != p.INTERNAL, (
        f"{what}: storage trouble must never answer INTERNAL, got {h.describe_status(status)}")
    assert status.code == getattr(p, code) and status.reason in reasons, (
        f"{what}: expected {code} {' or '.join(reasons)}, got {h.describe_status(status)}")


def _serving(d: h.Daemon) -> int:
    return d.health().status


def _wait_serving(d: h.Daemon, want: int, timeout: float = 3.0) -> int:
    """Poll Health until its status is want (or timeout); returns the last status seen."""
    deadline = time.monotonic() + timeout
    while True:
        last = _serving(d)
        if last == want or time.monotonic() > deadline:
            return last
        time.sleep(0.1)


def _status_name(value: int) -> str:
    return h.pb().ServingStatus.Name(value)


def _stock_or_none(c: h.Client, sku: str):
    p = h.pb()
    status, payload = c.call("GetStock", p.StockRef(sku=sku))
    if status.code == p.NOT_FOUND:
        return None
    assert status.code == p.OK, f"GetStock {sku}: {h.describe_status(status)}"
    return p.Stock.FromString(payload)


def _payment_or_none(c: h.Client, deal_id: str):
    p = h.pb()
    status, payload = c.call("GetPayment", p.PaymentRef(deal_id=deal_id))
    if status.code == p.NOT_FOUND:
        return None
    assert status.code == p.OK, f"GetPayment {deal_id}: {h.describe_status(status)}"
    return p.Payment.FromString(payload)


def _assert_no_sql_in_log(d: h.Daemon):
    hits = [l for l in d.stderr_text().splitlines() if SQL_WORDS.search(l)]
    assert not hits, (
        f"the log carries SQL text ({len(hits)} line(s)); storage trouble must be named, not "
        f"quoted:\n" + "\n".join(hits[:5]))


def _assert_log_names(d: h.Daemon, pattern: str, condition: str):
    rx = re.compile(pattern, re.IGNORECASE)
    lines = [l for l in d.stderr_text().splitlines() if rx.search(l)]
    assert lines, (f"no log line names the condition ({condition}, /{pattern}/); stderr tail:\n"
                   + d.stderr_tail(15))


def _every_call_works(d: h.Daemon, fake, tag: str):
    """After recovery: writes, reads, a checkout, Reconcile, Metrics, Health all answer OK."""
    p = h.pb()
    with d.client() as c:
        s = cs.set_stock(c, f"{tag}-after", 4, what=f"{tag}: SetStock after recovery")
        assert (s.on_hand, s.reserved) == (4, 0), f"{tag}: SetStock after recovery answered {s}"
        s = cs.call_ok(c, "AdjustStock", p.StockAdjustment(sku=f"{tag}-after", delta=2),
                       f"{tag}: AdjustStock after recovery")
        assert s.on_hand == 6, f"{tag}: AdjustStock after recovery answered {s}"
        assert cs.get_stock(c, f"{tag}-after").on_hand == 6
        pay = create_ok(c, checkout_request(f"{tag}-deal-after", [item(f"{tag}-after", 1, 700)]),
                        f"{tag}: CreateCheckout after recovery")
        assert pay.status == p.PAYMENT_STATUS_CREATED and pay.checkout_url, (
            f"{tag}: CreateCheckout after recovery: {rs.describe_payment(pay)} url={pay.checkout_url!r}")
        assert cs.get_payment(c, deal_id=f"{tag}-deal-after").payment_id == pay.payment_id
        assert cs.get_stock(c, f"{tag}-after").reserved == 1
        rs.reconcile(c)
        assert "paymentsd" in cs.call_ok(c, "Metrics", p.MetricsRequest(), "Metrics").text
    assert fake is None or fake.sessions_for_deal(f"{tag}-deal-after"), (
        f"{tag}: the checkout after recovery has no session at the fake")


class LockHolder:
    """Another process's write lock on the database: BEGIN IMMEDIATE from Python's sqlite3."""

    def __init__(self, path: str):
        self.path = path
        self.con: sqlite3.Connection | None = None

    def take(self):
        self.con = sqlite3.connect(self.path, isolation_level=None, timeout=5,
                                   check_same_thread=False)
        self.con.execute("BEGIN IMMEDIATE")
        return self

    def release(self):
        if self.con is not None:
            try:
                self.con.execute("ROLLBACK")
            finally:
                self.con.close()
                self.con = None


def _in_thread(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _joined(t: threading.Thread, out: dict, what: str, timeout: float = 15.0):
    t.join(timeout)
    assert not t.is_alive(), f"{what}: no answer within {timeout} s"
    if "error" in out:
        raise AssertionError(f"{what}: the call raised {out['error']!r}") from out["error"]
    return out["result"]


# ---------------------------------------------------------------------------
# A write lock held by another process


@pytest.mark.test_timeout(60)
def test_a_write_lock_held_by_another_process_answers_database_busy_and_changes_nothing(
        pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=15)
    cs.set_stock(c, "busy-a", 5)
    cs.set_stock(c, "busy-b", 7)
    lock = LockHolder(d.db_path).take()
    try:
        # 1. A write with a 2 s deadline, the busy timeout being the default 5 s: database_busy
        #    within about 2 s, not INTERNAL, not after the busy timeout.
        status, _, took = _timed(c, "SetStock", pb.StockUpdate(sku="busy-a", on_hand=6),
                                 timeout_ms=2000)
        _expect(status, "UNAVAILABLE", "database_busy",
                f"SetStock (timeout_ms=2000) with the write lock held by another process "
                f"(answered after {took:.2f} s)")
        assert took < 2.8, (f"database_busy came after {took:.2f} s; the busy wait must end at "
                            f"the call's deadline (2 s)")
        health = _serving(d)
        assert health == pb.SERVING_STATUS_NOT_SERVING, (
            f"Health while writes fail with database_busy: {_status_name(health)}")

        # 2. A checkout under the lock: database_busy, and Stripe was never asked.
        sessions_before = fake_stripe.request_count()
        status, _, took = _timed(c, "CreateCheckout",
                                 checkout_request("busy-deal", [item("busy-a", 2, 900)]),
                                 timeout_ms=1500)
        _expect(status, "UNAVAILABLE", "database_busy",
                f"CreateCheckout (timeout_ms=1500) under the lock (after {took:.2f} s)")
        assert took < 2.3, f"CreateCheckout's database_busy came after {took:.2f} s (deadline 1.5 s)"
        assert fake_stripe.request_count() == sessions_before, (
            "a CreateCheckout refused for database_busy opened a session at Stripe")

        # 3. A write waiting (3 s deadline) and, queued behind it, writes with a 1 s deadline: those
        #    are never run (DEADLINE_EXCEEDED deadline_exceeded) and change nothing.
        def first():
            with h.Client(d.socket_path, timeout=15) as cl:
                return _timed(cl, "SetStock", pb.StockUpdate(sku="busy-a", on_hand=8),
                              timeout_ms=3000)

        def queued(method, msg):
            def run():
                time.sleep(0.3)
                with h.Client(d.socket_path, timeout=15) as cl:
                    return _timed(cl, method, msg, timeout_ms=1000)
            return run

        ta = _in_thread(first)
        tb = _in_thread(queued("SetStock", pb.StockUpdate(sku="busy-b", on_hand=99)))
        tc = _in_thread(queued("AdjustStock", pb.StockAdjustment(sku="busy-b", delta=5)))
        td = _in_thread(queued("SetStock", pb.StockUpdate(sku="busy-new", on_hand=1)))
        sa, _, took_a = _joined(*ta, "the first SetStock under the lock")
        _expect(sa, "UNAVAILABLE", "database_busy",
                f"SetStock (timeout_ms=3000) under the lock (after {took_a:.2f} s)")
        assert took_a < 3.8, f"database_busy after {took_a:.2f} s for a 3 s deadline"
        for (t, out), what in ((tb, "SetStock busy-b=99"), (tc, "AdjustStock busy-b +5"),
                               (td, "SetStock busy-new=1")):
            sq, _, took_q = _joined(t, out, f"queued {what}")
            _expect(sq, "DEADLINE_EXCEEDED", "deadline_exceeded",
                    f"{what} (timeout_ms=1000) queued behind a write waiting for the lock "
                    f"(answered after {took_q:.2f} s)")
            assert took_q < 3.8, f"queued {what}: answered only after {took_q:.2f} s"
        health = _serving(d)
        assert health == pb.SERVING_STATUS_NOT_SERVING, (
            f"Health while the lock is still held: {_status_name(health)}")
    finally:
        lock.release()

    # 4. Released: a write works, Health is SERVING again, nothing refused above was applied.
    s = cs.set_stock(c, "busy-c", 1, what="SetStock after the lock was released")
    assert s.on_hand == 1
    health = _wait_serving(d, pb.SERVING_STATUS_SERVING)
    assert health == pb.SERVING_STATUS_SERVING, (
        f"Health after the lock was released and a write succeeded: {_status_name(health)}")
    # One more write through the (single) writer, so anything still queued would have run by now.
    cs.set_stock(c, "busy-d", 1)
    got = {sku: _stock_or_none(c, sku) for sku in ("busy-a", "busy-b", "busy-new")}
    assert got["busy-a"] is not None and (got["busy-a"].on_hand, got["busy-a"].reserved) == (5, 0), (
        f"writes answered database_busy changed busy-a (want on_hand 5, reserved 0): {got['busy-a']}")
    assert got["busy-b"] is not None and got["busy-b"].on_hand == 7, (
        f"writes answered DEADLINE_EXCEEDED while queued were run anyway: busy-b is "
        f"{got['busy-b'].on_hand if got['busy-b'] else None}, want 7")
    assert got["busy-new"] is None, (
        "a SetStock answered DEADLINE_EXCEEDED while queued was run anyway: busy-new exists")
    assert _payment_or_none(c, "busy-deal") is None or (
        _payment_or_none(c, "busy-deal").status != pb.PAYMENT_STATUS_CREATED), (
        "a CreateCheckout answered database_busy left a CREATED payment")

    # 5. A write that waits for the lock less than its deadline goes through when it is released.
    lock = LockHolder(d.db_path).take()
    timer = threading.Timer(1.0, lock.release)
    timer.start()
    try:
        status, payload, took = _timed(c, "SetStock", pb.StockUpdate(sku="busy-a", on_hand=9),
                                       timeout_ms=6000)
    finally:
        timer.join()
        lock.release()
    assert status.code == pb.OK, (
        f"SetStock (timeout_ms=6000) waiting for a lock released after 1 s: "
        f"{h.describe_status(status)} after {took:.2f} s")
    assert 0.8 < took < 3.5, f"the waiting SetStock answered after {took:.2f} s (lock held 1 s)"
    assert cs.get_stock(c, "busy-a").on_hand == 9

    _every_call_works(d, fake_stripe, "busy")
    assert _serving(d) == pb.SERVING_STATUS_SERVING
    _assert_log_names(d, r"\bbusy\b", "database busy")
    _assert_no_sql_in_log(d)
    h.assert_clean_stderr(d)


@pytest.mark.test_timeout(60)
def test_writes_with_an_idempotency_key_keep_to_their_deadline_under_a_held_lock(
        pay_daemon, fake_stripe, pb):
    """A call with an idempotency key writes the key as well as its effect: under a lock held by
    another process it too answers database_busy by its deadline, sends nothing to Stripe, and is
    safe to retry with the same key once the lock is gone (done once, then replayed)."""
    d = pay_daemon()
    c = d.client(timeout=20)
    rs.paid_payment(c, fake_stripe, "busy-paid", "busy-p", 1, 1000, set_stock=3)
    lock = LockHolder(d.db_path).take()
    try:
        status, _, took = _timed(c, "SetStock", pb.StockUpdate(sku="busy-k", on_hand=3),
                                 timeout_ms=2000, idempotency_key="busy-key-1")
        _expect(status, "UNAVAILABLE", "database_busy",
                f"SetStock with an idempotency key (timeout_ms=2000) under the lock "
                f"(after {took:.2f} s)")
        assert took < 2.8, (f"SetStock with an idempotency key and timeout_ms=2000: "
                            f"database_busy after {took:.2f} s, past its deadline")
        status, _, took = _timed(c, "RefundPayment",
                                 rs.refund_request(deal_id="busy-paid", amount=100),
                                 timeout_ms=2000, idempotency_key="busy-refund-1")
        _expect(status, "UNAVAILABLE", "database_busy",
                f"RefundPayment (timeout_ms=2000) under the lock (after {took:.2f} s)")
        assert took < 2.8, (f"RefundPayment with timeout_ms=2000: database_busy after "
                            f"{took:.2f} s, past its deadline")
        assert not rs.refund_posts(fake_stripe), "a refund answered database_busy was sent to Stripe"
    finally:
        lock.release()

    # Safe to retry with the same key: done once now, then replayed.
    for attempt in (1, 2):
        s = cs.call_ok(c, "SetStock", pb.StockUpdate(sku="busy-k", on_hand=3),
                       f"SetStock busy-k retried with its key (attempt {attempt})",
                       idempotency_key="busy-key-1")
        assert s.on_hand == 3
    for attempt in (1, 2):
        ref = rs.refund_ok(c, "busy-refund-1", f"RefundPayment retried with its key ({attempt})",
                           deal_id="busy-paid", amount=100)
        assert ref.amount == 100
    assert len(rs.refund_posts(fake_stripe)) >= 1 and len(
        {r["idempotency_key"] for r in rs.refund_posts(fake_stripe)}) == 1, (
        f"the retried refund reached Stripe under several keys: {rs.refund_posts(fake_stripe)}")
    assert cs.get_payment(c, deal_id="busy-paid").amount_refunded == 100
    _assert_no_sql_in_log(d)


@pytest.mark.test_timeout(40)
def test_the_busy_wait_is_bounded_by_paymentsd_busy_timeout_ms(start_daemon, pb):
    d = start_daemon(env={"PAYMENTSD_BUSY_TIMEOUT_MS": "600"})
    c = d.client(timeout=15)
    cs.set_stock(c, "bt", 1)
    lock = LockHolder(d.db_path).take()
    try:
        for timeout_ms in (0, 10000):
            status, _, took = _timed(c, "SetStock", pb.StockUpdate(sku="bt", on_hand=2),
                                     timeout_ms=timeout_ms)
            _expect(status, "UNAVAILABLE", "database_busy",
                    f"SetStock timeout_ms={timeout_ms} with PAYMENTSD_BUSY_TIMEOUT_MS=600 under "
                    f"the lock (after {took:.2f} s)")
            assert took < 1.6, (
                f"SetStock timeout_ms={timeout_ms}: database_busy after {took:.2f} s; the busy "
                f"wait must end after PAYMENTSD_BUSY_TIMEOUT_MS=600")
    finally:
        lock.release()
    assert cs.get_stock(c, "bt").on_hand == 1, "a write answered database_busy was applied"
    cs.set_stock(c, "bt", 3)
    assert _wait_serving(d, pb.SERVING_STATUS_SERVING) == pb.SERVING_STATUS_SERVING
    _assert_no_sql_in_log(d)


# ---------------------------------------------------------------------------
# A full disk


def _fill(path: str) -> int:
    """Write a file until the file system is full; returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    size = 0
    try:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            buf = b"\xa5" * chunk
            while True:
                try:
                    n = os.write(fd, buf)
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        break
                    raise
                size += n
    finally:
        os.close(fd)
    return size


@pytest.fixture
def small_tmpfs():
    """A 4 MiB tmpfs under /tmp, unmounted at the end (the test stops its daemon first)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mnt = h.make_tmpdir("pd-full-")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt],
                         capture_output=True, text=True, timeout=20)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        res = subprocess.run(["umount", mnt], capture_output=True, text=True, timeout=20)
        if res.returncode != 0:
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=20)
        os.rmdir(mnt)


@pytest.mark.test_timeout(60)
def test_a_full_disk_answers_unavailable_leaves_nothing_half_done_and_recovers(
        pay_daemon, fake_stripe, small_tmpfs, pb):
    full_reasons = ("database_full", "database_unavailable")
    env = {"PAYMENTSD_DB": os.path.join(small_tmpfs, "payments.db")}
    d = pay_daemon(env=env)
    restarted: list[h.Daemon] = []
    try:
        c = d.client(timeout=15)
        cs.set_stock(c, "full-mug", 10)
        first = create_ok(c, checkout_request("full-1", [item("full-mug", 2, 900)]))
        filler = os.path.join(small_tmpfs, "filler")

        # A checkout in flight when the disk fills: its payment and reservation are written, Stripe
        # is slow (1.5 s), and the disk is full when the session comes back to be recorded.
        fake_stripe.add_fault(kind="delay", ms=1500, times=1)

        def mid():
            with h.Client(d.socket_path, timeout=20) as cl:
                return cl.call("CreateCheckout",
                               checkout_request("full-mid", [item("full-mug", 1, 900)]),
                               timeout_ms=15000, timeout=20)

        t_mid = _in_thread(mid)
        time.sleep(0.7)
        _fill(filler)
        st_mid, _ = _joined(*t_mid, "CreateCheckout full-mid (in flight while the disk filled)")
        if st_mid.code != pb.OK:
            _expect(st_mid, "UNAVAILABLE", full_reasons,
                    "CreateCheckout full-mid whose session came back to a full disk")

        # Writes until the first one the disk refuses (the WAL may have a little room left).
        answers: dict[int, object] = {}
        failed_at = None
        for i in range(200):
            status, _ = c.call("SetStock", pb.StockUpdate(sku=f"full-s{i}", on_hand=i + 1))
            answers[i] = status
            if status.code != pb.OK:
                failed_at = i
                break
        assert failed_at is not None, "200 SetStocks all answered OK on a full disk"
        _expect(answers[failed_at], "UNAVAILABLE", full_reasons, f"SetStock #{failed_at} on a full disk")
        seen = {answers[failed_at].reason}

        health = _serving(d)
        assert health == pb.SERVING_STATUS_NOT_SERVING, (
            f"Health while the disk is full and writes fail: {_status_name(health)}")

        # More writes on the full disk: each OK or a storage UNAVAILABLE, never INTERNAL.
        sessions_before = fake_stripe.request_count()
        st_checkout, _ = c.call("CreateCheckout", checkout_request("full-2", [item("full-mug", 3, 900)]))
        st_adjust, _ = c.call("AdjustStock", pb.StockAdjustment(sku="full-mug", delta=5))
        st_more, _ = c.call("SetStock", pb.StockUpdate(sku="full-late", on_hand=1))
        for st, what in ((st_checkout, "CreateCheckout full-2"), (st_adjust, "AdjustStock full-mug +5"),
                         (st_more, "SetStock full-late")):
            if st.code != pb.OK:
                _expect(st, "UNAVAILABLE", full_reasons, f"{what} on a full disk")
                seen.add(st.reason)
        if st_checkout.code != pb.OK:
            pay = _payment_or_none(c, "full-2")
            assert pay is None or pay.status != pb.PAYMENT_STATUS_CREATED or (
                pay.checkout_session_id and pay.checkout_url), (
                f"a refused CreateCheckout left a CREATED payment without a session: "
                f"{rs.describe_payment(pay)}")
        stock = _stock_or_none(c, "full-mug")
        assert stock is not None and stock.available == stock.on_hand - stock.reserved
        print(f"full disk: in-flight CreateCheckout: {h.describe_status(st_mid)}; "
              f"first refused write #{failed_at} "
              f"({h.describe_status(answers[failed_at])}); CreateCheckout: "
              f"{h.describe_status(st_checkout)}; AdjustStock: {h.describe_status(st_adjust)}; "
              f"stock during: {stock.on_hand}/{stock.reserved}")

        os.unlink(filler)

        # Space is back: the first write works, Health is SERVING again.
        s = cs.set_stock(c, "full-first-after", 1, what="the first write after space was freed")
        assert s.on_hand == 1
        health = _wait_serving(d, pb.SERVING_STATUS_SERVING)
        assert health == pb.SERVING_STATUS_SERVING, (
            f"Health after space was freed and a write succeeded: {_status_name(health)}")

        # Nothing half-done: acknowledged writes are there, refused ones changed nothing.
        problems = []
        for i, st in answers.items():
            got = _stock_or_none(c, f"full-s{i}")
            if st.code == pb.OK and (got is None or got.on_hand != i + 1):
                problems.append(f"SetStock full-s{i} answered OK but reads {got}")
            if st.code != pb.OK and got is not None:
                problems.append(f"SetStock full-s{i} answered {h.describe_status(st)} but exists: "
                                f"on_hand {got.on_hand}")
        late = _stock_or_none(c, "full-late")
        if (st_more.code == pb.OK) != (late is not None):
            problems.append(f"SetStock full-late answered {h.describe_status(st_more)}, row: {late}")
        assert not problems, "after the full disk:\n" + "\n".join(problems)

        # The checkout retried: one CREATED payment with the deal's one open session.
        pay = create_ok(c, checkout_request("full-2", [item("full-mug", 3, 900)]),
                        "CreateCheckout full-2 retried after space was freed")
        assert pay.status == pb.PAYMENT_STATUS_CREATED and pay.checkout_session_id and pay.checkout_url, (
            f"full-2 after recovery: {rs.describe_payment(pay)} url={pay.checkout_url!r}")
        open_sessions = [s["id"] for s in fake_stripe.sessions_for_deal("full-2")
                         if s["status"] == "open"]
        assert open_sessions == [pay.checkout_session_id], (
            f"full-2: open sessions at the fake {open_sessions}, the payment's is "
            f"{pay.checkout_session_id} (Stripe asked {fake_stripe.request_count() - sessions_before} "
            f"time(s) since the disk filled)")
        mid_pay = create_ok(c, checkout_request("full-mid", [item("full-mug", 1, 900)]),
                            "CreateCheckout full-mid retried after space was freed")
        assert mid_pay.status == pb.PAYMENT_STATUS_CREATED and mid_pay.checkout_url, (
            f"full-mid after recovery: {rs.describe_payment(mid_pay)} url={mid_pay.checkout_url!r}")
        mid_sessions = fake_stripe.sessions_for_deal("full-mid")
        assert [s["id"] for s in mid_sessions if s["status"] == "open"] == [mid_pay.checkout_session_id], (
            f"full-mid (first answered {h.describe_status(st_mid)}): sessions at the fake "
            f"{[(s['id'], s['status']) for s in mid_sessions]}, the payment's is "
            f"{mid_pay.checkout_session_id}")
        stock = cs.get_stock(c, "full-mug")
        want_on_hand = 10 + (5 if st_adjust.code == pb.OK else 0)
        assert (stock.on_hand, stock.reserved, stock.available) == (want_on_hand, 6, want_on_hand - 6), (
            f"full-mug after recovery: on_hand {stock.on_hand} reserved {stock.reserved} available "
            f"{stock.available}; want on_hand {want_on_hand} (AdjustStock answered "
            f"{h.describe_status(st_adjust)}), reserved 2 (full-1) + 3 (full-2) + 1 (full-mid)")
        assert cs.get_payment(c, deal_id="full-1").checkout_session_id == first.checkout_session_id

        _every_call_works(d, fake_stripe, "full")
        assert _serving(d) == pb.SERVING_STATUS_SERVING
        if "database_full" in seen:
            _assert_log_names(d, r"\bfull\b|no space", "disk full")
        else:
            _assert_log_names(d, r"I/O error|unavailable", "I/O error")
        _assert_no_sql_in_log(d)
        h.assert_clean_stderr(d)

        # And it all survives a restart.
        d.stop()
        restarted.append(pay_daemon(env=env, workdir=d.workdir, name="restarted"))
        with restarted[0].client() as c2:
            assert cs.get_stock(c2, "full-mug").reserved == 6
            assert cs.get_payment(c2, deal_id="full-mid").payment_id == mid_pay.payment_id
            assert cs.get_payment(c2, deal_id="full-2").payment_id == pay.payment_id
            assert cs.get_stock(c2, "full-after").on_hand == 6
    finally:
        # Stop every daemon using the tmpfs before it is unmounted.
        for dd in (d, *restarted):
            dd.kill()


# ---------------------------------------------------------------------------
# The database unlinked or replaced under the running daemon


def _unlink_db(path: str) -> list[str]:
    gone = []
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
            gone.append(os.path.basename(path + suffix))
        except FileNotFoundError:
            pass
    return gone


@pytest.mark.test_timeout(60)
def test_an_unlinked_database_answers_unavailable_and_acknowledges_nothing(
        pay_daemon, fake_stripe, pb):
    d = pay_daemon()
    c = d.client(timeout=15)
    cs.set_stock(c, "gone-sku", 10)
    rs.paid_payment(c, fake_stripe, "gone-paid", "gone-sku", 1, 1000)
    opened = ws.open_checkout(c, "gone-open", "gone-sku", 1, 1000)
    fake_stripe.complete_session(opened.checkout_session_id, paid=True)
    body, sig = ws.session_delivery(fake_stripe, opened.checkout_session_id, ws.COMPLETED)
    sessions_before = fake_stripe.counters()["sessions_created"]
    refunds_before = len(rs.refund_posts(fake_stripe))

    removed = _unlink_db(d.db_path)
    assert "payments.db" in removed

    # The writes of the trial, each recorded with what it answered and how to find it
    # again after a restart.
    answers: list[tuple[str, object, object]] = []   # (what, status, present-after-restart check)

    def stock_is(sku, on_hand):
        return lambda cl: (lambda s: s is not None and s.on_hand == on_hand)(_stock_or_none(cl, sku))

    for i in range(10):
        st, _ = c.call("SetStock", pb.StockUpdate(sku=f"gone-s{i}", on_hand=i + 1))
        answers.append((f"SetStock gone-s{i}={i + 1}", st, stock_is(f"gone-s{i}", i + 1)))
    health_after_first = _serving(d)
    st, _ = c.call("AdjustStock", pb.StockAdjustment(sku="gone-sku", delta=4))
    answers.append(("AdjustStock gone-sku +4", st, stock_is("gone-sku", 14)))
    for i in range(3):
        deal = f"gone-new-{i}"
        st, _ = c.call("CreateCheckout", checkout_request(deal, [item("gone-sku", 1, 500)]))
        answers.append((f"CreateCheckout {deal}", st,
                        lambda cl, deal=deal: _payment_or_none(cl, deal) is not None))
    st, _ = ws.deliver(c, body, sig)
    answers.append(("HandleStripeEvent completed of gone-open", st,
                    lambda cl: (lambda p_: p_ is not None and p_.status == pb.PAYMENT_STATUS_PAID)(
                        _payment_or_none(cl, "gone-open"))))
    st, _, _ = rs.refund(c, "gone-refund-1", deal_id="gone-paid", amount=300)
    answers.append(("RefundPayment gone-paid 300", st,
                    lambda cl: (lambda p_: p_ is not None and p_.amount_refunded == 300)(
                        _payment_or_none(cl, "gone-paid"))))
    for i in range(10, 15):
        st, _ = c.call("SetStock", pb.StockUpdate(sku=f"gone-s{i}", on_hand=i + 1))
        answers.append((f"SetStock gone-s{i}={i + 1}", st, stock_is(f"gone-s{i}", i + 1)))
    time.sleep(0.5)
    health_later = _serving(d)
    sessions_after = fake_stripe.counters()["sessions_created"]
    refunds_after = len(rs.refund_posts(fake_stripe))
    log = d.stderr_text()

    # Restart on the path (a fresh database now) and look for every write acknowledged above.
    d.stop()
    d2 = pay_daemon(workdir=d.workdir, name="restarted")
    with d2.client(timeout=15) as c2:
        acked = [what for what, st_, _ in answers if st_.code == pb.OK]
        missing = [what for what, st_, present in answers if st_.code == pb.OK and not present(c2)]
        # The restarted daemon serves normally.
        cs.set_stock(c2, "gone-restarted", 1)
        assert _serving(d2) == pb.SERVING_STATUS_SERVING

    summary = "\n".join(f"  {what}: {h.describe_status(st_)}" for what, st_, _ in answers)
    assert not acked, (
        f"{len(acked)} write(s) answered OK after the database was unlinked; after a restart "
        f"{len(missing)} of them are gone: {missing}\nall answers:\n{summary}")
    first_what, first_status, _ = answers[0]
    _expect(first_status, "UNAVAILABLE", "database_unavailable",
            f"the first write after payments.db, -wal and -shm were unlinked ({first_what}); "
            f"all answers:\n{summary}\n")
    for what, st_, _ in answers:
        _expect(st_, "UNAVAILABLE", "database_unavailable", f"{what} after the unlink")
    assert health_after_first == pb.SERVING_STATUS_NOT_SERVING, (
        f"Health after a write found the database unlinked: {_status_name(health_after_first)}")
    assert health_later == pb.SERVING_STATUS_NOT_SERVING, (
        f"Health later (the database stays gone until a restart): {_status_name(health_later)}")
    assert sessions_after == sessions_before, (
        f"{sessions_after - sessions_before} checkout session(s) opened at Stripe after the "
        f"database was unlinked (checkouts the daemon cannot remember)")
    assert refunds_after == refunds_before, (
        "a refund was sent to Stripe after the database was unlinked")
    lines = [l for l in log.splitlines() if REMOVED_RE.search(l)]
    assert len(lines) == 1, (
        f"expected the error 'database file ... removed or replaced' logged once, found "
        f"{len(lines)} line(s):\n" + "\n".join(lines[:5]))
    assert re.match(r"^<[0-3]>", lines[0]), f"not logged as an error: {lines[0]!r}"
    assert d.db_path in lines[0] or "payments.db" in lines[0], (
        f"the line does not name the database file: {lines[0]!r}")
    _assert_no_sql_in_log(d)
    h.assert_clean_stderr(d)


def _replacement(kind: str, src_path: str, dst_path: str):
    dst = sqlite3.connect(dst_path)
    try:
        if kind == "copy":
            # A copy of the daemon's own database (a "restored backup"): same schema, same rows.
            src = sqlite3.connect(src_path)
            try:
                src.backup(dst)
            finally:
                src.close()
            dst.execute("PRAGMA journal_mode=DELETE")
        else:
            dst.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
            dst.execute("INSERT INTO notes (body) VALUES ('not the payments database')")
            dst.commit()
    finally:
        dst.close()


@pytest.mark.test_timeout(40)
@pytest.mark.parametrize("kind", ["copy", "other"])
def test_a_database_file_replaced_under_the_daemon_is_detected(start_daemon, pb, kind):
    d = start_daemon()
    c = d.client(timeout=15)
    cs.set_stock(c, "rep-a", 3)
    repl = os.path.join(d.workdir, "replacement.db")
    _replacement(kind, d.db_path, repl)
    with open(repl, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    os.replace(repl, d.db_path)

    answers = []
    for what, method, msg in (
            ("SetStock rep-a=4", "SetStock", pb.StockUpdate(sku="rep-a", on_hand=4)),
            ("SetStock rep-b=1", "SetStock", pb.StockUpdate(sku="rep-b", on_hand=1)),
            ("AdjustStock rep-a +1", "AdjustStock", pb.StockAdjustment(sku="rep-a", delta=1))):
        st, _ = c.call(method, msg)
        answers.append((what, st))
    health = _serving(d)
    time.sleep(0.5)
    st, _ = c.call("SetStock", pb.StockUpdate(sku="rep-c", on_hand=1))
    answers.append(("SetStock rep-c=1 (later)", st))
    health_later = _serving(d)

    summary = "\n".join(f"  {what}: {h.describe_status(s)}" for what, s in answers)
    for what, s in answers:
        _expect(s, "UNAVAILABLE", "database_unavailable",
                f"{what} after another file ({kind}) was moved over payments.db; all answers:\n"
                f"{summary}\n")
    assert health == pb.SERVING_STATUS_NOT_SERVING and health_later == pb.SERVING_STATUS_NOT_SERVING, (
        f"Health after the database file was replaced: {_status_name(health)}, later "
        f"{_status_name(health_later)}")
    with open(d.db_path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest, (
            "the daemon wrote into the file that was moved over its database")
    lines = [l for l in d.stderr_text().splitlines() if REMOVED_RE.search(l)]
    assert len(lines) == 1, (
        f"expected the error 'database file ... removed or replaced' logged once, found "
        f"{len(lines)} line(s):\n" + "\n".join(lines[:5]))
    assert re.match(r"^<[0-3]>", lines[0]), f"not logged as an error: {lines[0]!r}"
    _assert_no_sql_in_log(d)
    h.assert_clean_stderr(d)


# ---------------------------------------------------------------------------
# Immutable files (the issue's `chattr +i` trial)


def _chattr(flag: str, paths: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["chattr", flag, *paths], capture_output=True, text=True, timeout=20)


@pytest.mark.test_timeout(40)
def test_an_immutable_database_answers_unavailable_never_internal(start_daemon, pb):
    """payments.db, -wal and -shm made immutable under the running daemon (the issue's trial; root
    meets a read-only file this way): storage trouble, UNAVAILABLE database_read_only (or
    database_unavailable), never INTERNAL and never a crash (the old daemon died of SIGBUS inside
    SQLite); Health is NOT_SERVING; the log names the condition without SQL. Once the flag is
    cleared a write works and Health is SERVING again (read-only is not permanent); after a restart
    the refused writes are absent and the earlier ones present."""
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("needs root and chattr")
    d = start_daemon()
    c = d.client(timeout=15)
    cs.set_stock(c, "imm-a", 3)
    files = [d.db_path + suffix for suffix in ("", "-wal", "-shm")]
    assert all(os.path.exists(f) for f in files), f"test setup: not all of {files} exist"
    res = _chattr("+i", files)
    if res.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {res.stderr.strip()}")
    answers = []
    try:
        for what, method, msg in (
                ("SetStock imm-a=4", "SetStock", pb.StockUpdate(sku="imm-a", on_hand=4)),
                ("SetStock imm-b=1", "SetStock", pb.StockUpdate(sku="imm-b", on_hand=1)),
                ("AdjustStock imm-a +2", "AdjustStock", pb.StockAdjustment(sku="imm-a", delta=2))):
            try:
                st, _ = c.call(method, msg)
            except (h.ConnectionClosed, OSError) as e:
                raise AssertionError(
                    f"{what} on immutable database files: the connection ended ({e!r}); daemon "
                    f"exit status {d.proc.poll()}") from e
            answers.append((what, st))
        health = _serving(d)
    finally:
        _chattr("-i", files)
    assert d.alive(), f"the daemon died (status {d.proc.poll()}) on immutable database files"
    summary = "\n".join(f"  {what}: {h.describe_status(s)}" for what, s in answers)
    for what, s in answers:
        _expect(s, "UNAVAILABLE", ("database_read_only", "database_unavailable"),
                f"{what} with payments.db, -wal and -shm immutable; all answers:\n{summary}\n")
    assert health == pb.SERVING_STATUS_NOT_SERVING, (
        f"Health while writes fail on immutable files: {_status_name(health)}")
    _assert_log_names(d, r"read-only|read only|I/O error|unavailable|cannot take writes",
                      "read-only / I/O error")
    _assert_no_sql_in_log(d)
    h.assert_clean_stderr(d)

    if all(s.reason == "database_read_only" for _, s in answers):
        cs.set_stock(c, "imm-d", 1, what="SetStock after the immutable flag was cleared")
        health = _wait_serving(d, pb.SERVING_STATUS_SERVING)
        assert health == pb.SERVING_STATUS_SERVING, (
            f"Health after the files became writable again and a write worked: "
            f"{_status_name(health)}")
    d.stop()
    with start_daemon(workdir=d.workdir, name="restarted").client() as c2:
        assert (cs.get_stock(c2, "imm-a").on_hand, _stock_or_none(c2, "imm-b")) == (3, None), (
            "after a restart, writes refused on the immutable files were applied")
        cs.set_stock(c2, "imm-c", 1)
