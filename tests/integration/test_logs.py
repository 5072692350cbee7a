"""Logs: journald level prefixes on every line, no secrets."""

from __future__ import annotations

import paymentsd_harness as h


def test_every_stderr_line_has_a_level_prefix(start_daemon, pb):
    d = start_daemon()
    c = d.client()
    c.call("Health", pb.HealthRequest())
    c.call("Metrics", pb.MetricsRequest())
    c.call("Nope", b"")
    c.call("Health", b"\xff\xff\xff")
    c.call("Health", pb.HealthRequest(), idempotency_key="bad\nkey")
    c.call("Reconcile", pb.ReconcileRequest())
    for bad in (h.header(0), h.header(2 << 20), h.frame(b"\xff\xff\xff")):
        with d.client() as b:
            b.send_bytes(bad)
            b.recv_frame()
    with d.client() as b:
        b.send_bytes(h.header(50) + b"abc")
        b.shutdown_write()
        b.expect_closed()
    assert d.stop() == 0
    text = d.stderr_text()
    assert text.strip(), "a debug-level run wrote nothing at all to stderr"
    h.assert_clean_stderr(d)


def test_log_level_error_is_quiet(start_daemon, pb):
    """At level error, normal traffic logs nothing below error (<0>-<3>)."""
    d = start_daemon(env={"PAYMENTSD_LOG_LEVEL": "error"})
    c = d.client()
    for _ in range(5):
        c.call("Health", pb.HealthRequest())
    c.call("Nope", b"")
    assert d.stop() == 0
    text = d.stderr_text()
    h.assert_clean_stderr(d)
    noisy = [l for l in text.splitlines() if l[:3] not in ("<0>", "<1>", "<2>", "<3>")]
    assert not noisy, f"lines below level error with PAYMENTSD_LOG_LEVEL=error: {noisy[:5]}"
