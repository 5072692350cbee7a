"""Helpers of the HTTP endpoint's tests: a free loopback port, waiting for the endpoint, and one
request on a new connection."""

from __future__ import annotations

import http.client
import socket
import time

import paymentsd_harness as h


def free_port() -> int:
    """A loopback port free now (another process may take it before the daemon does: rare)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(d: h.Daemon, timeout: float = 10.0):
    """Until the daemon's log says its HTTP endpoint listens."""
    deadline = time.monotonic() + timeout
    while "http endpoint listening" not in d.stderr_text():
        assert time.monotonic() < deadline, f"the HTTP endpoint did not start:\n{d.stderr_text()}"
        time.sleep(0.05)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()
