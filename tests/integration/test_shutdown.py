"""Graceful shutdown on SIGTERM / SIGINT."""

from __future__ import annotations

import signal
import time

import pytest

import paymentsd_harness as h
from paymentsd_harness import describe_status


def _probe_new_connection(path: str) -> str:
    """What a new client sees: 'refused' (connect fails), 'closed' (accepted
    or queued, then closed without an answer) or 'answered: ...'."""
    try:
        c = h.Client(path, timeout=10)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        return f"refused ({type(e).__name__})"
    except OSError as e:
        return f"refused ({e})"
    try:
        try:
            c.send_request(h.make_request("Health", h.pb().HealthRequest(), request_id=999))
        except OSError:
            return "closed (send failed)"
        try:
            resp = c.recv_frame(timeout=10)
        except h.ConnectionClosed:
            return "closed"
        except TimeoutError:
            return "hung (no answer and not closed within 10 s)"
        return f"answered: {describe_status(resp.status)}"
    finally:
        c.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_requests_in_flight(start_daemon, pb, sig):
    d = start_daemon(env={"PAYMENTSD_TEST_DELAY_MS": "1500"})
    conns = [d.client(timeout=20), d.client(timeout=20)]
    batches = []
    for c in conns:
        reqs = [c.request("Health", pb.HealthRequest()) for _ in range(10)]
        c.send_bytes(b"".join(h.encode_request(r) for r in reqs))
        batches.append(reqs)
    time.sleep(0.3)
    t_sig = time.monotonic()
    d.send_signal(sig)

    time.sleep(0.2)
    probe = _probe_new_connection(d.socket_path)
    assert probe.startswith(("refused", "closed")), (
        f"a connection made after {sig.name} was {probe}; new connections must "
        f"be refused once the daemon is shutting down")

    for c, reqs in zip(conns, batches):
        got = c.read_responses([r.request_id for r in reqs], timeout=15)
        bad = [f"{rid}: {describe_status(r.status)}" for rid, r in got.items()
               if r.status.code != pb.OK]
        assert not bad, f"requests in flight at {sig.name} did not complete OK: {bad}"

    remaining = 15 - (time.monotonic() - t_sig)
    rc = d.wait(max(remaining, 0.1))
    assert rc == 0, (
        f"exit status after {sig.name} was {rc}, expected 0\n{d.stderr_tail()}")
    # The clients' connections are closed by the exit.
    for c in conns:
        c.expect_closed(timeout=5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_when_idle(daemon, pb, sig):
    # An idle open connection (and one with half a frame) must not hold up
    # the exit.
    idle = daemon.client()
    half = daemon.client()
    half.send_bytes(h.header(100) + b"\x08")
    t0 = time.monotonic()
    rc = daemon.stop(sig, timeout=15)
    assert rc == 0, f"exit status after {sig.name}: {rc}\n{daemon.stderr_tail()}"
    assert time.monotonic() - t0 < 15
    idle.expect_closed(timeout=5)


@pytest.mark.test_timeout(180)
def test_sigterm_with_idle_connections_repeatedly(make_daemon, pb):
    """Ten start/stop cycles, each with connections that never sent a whole
    frame (2 silent, 2 holding part of a frame): every exit is status 0.
    A shutdown race would show up as an occasional crash, so repeat."""
    for cycle in range(10):
        d = make_daemon(name=f"cycle{cycle}")
        d.start()
        conns = [d.client() for _ in range(4)]
        conns[2].send_bytes(h.header(100) + b"\x08")
        conns[3].send_bytes(b"\x00\x00")
        rc = d.stop(signal.SIGTERM, timeout=15)
        assert rc == 0, (
            f"cycle {cycle}: exit status after SIGTERM with idle connections "
            f"was {rc}\n{d.stderr_tail(10)}")
        d.cleanup()


def test_restart_after_sigterm(start_daemon, pb):
    """After a clean stop the same socket path and database serve again."""
    d = start_daemon()
    assert d.stop() == 0
    d2 = start_daemon(env={"PAYMENTSD_SOCKET": d.socket_path, "PAYMENTSD_DB": d.db_path},
                      workdir=d.workdir, name="second")
    assert d2.health().status == pb.SERVING_STATUS_SERVING
