"""Socket activation with two named sockets (systemd's LISTEN_FDS and LISTEN_FDNAMES), as
paymentsd.socket (FileDescriptorName=rpc) and paymentsd-http.socket (FileDescriptorName=http)
pass them: the daemon tells them apart by name, in either order, and serves both."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import paymentsd_harness as h
from http_support import free_port

ACTIVATE = shutil.which("systemd-socket-activate")


def _healthz(port: int) -> tuple[int, bytes]:
    deadline = time.monotonic() + 15
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/healthz")
            res = conn.getresponse()
            return res.status, res.read()
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            # systemd-socket-activate starts the daemon on the first connection; it may take a moment.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed (Debian: systemd)")
@pytest.mark.parametrize("order", ["rpc:http", "http:rpc"])
def test_two_named_sockets_are_told_apart_and_both_served(paymentsd_bin, pb, order):
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        socket_path = os.path.join(directory, "p.sock")
        listens = {"rpc": ["-l", socket_path], "http": ["-l", f"127.0.0.1:{port}"]}
        args = [ACTIVATE, *listens[order.split(":")[0]], *listens[order.split(":")[1]], f"--fdname={order}"]
        env = {"PAYMENTSD_DB": os.path.join(directory, "p.db"), "STRIPE_API_BASE": "http://127.0.0.1:9",
               "STRIPE_SECRET_KEY": "sk_test_activation", "STRIPE_WEBHOOK_SECRETS": h.WEBHOOK_SECRET,
               "PAYMENTSD_JANITOR_INTERVAL": "3600"}
        for name, value in env.items():
            args += ["-E", f"{name}={value}"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENTSD_", "STRIPE_", "LISTEN_"))}
        log = open(os.path.join(directory, "stderr"), "w+b")
        proc = subprocess.Popen([*args, str(paymentsd_bin)], env=clean, stdout=log, stderr=subprocess.STDOUT)
        try:
            status, body = _healthz(port)
            assert (status, body) == (200, b"serving\n")
            with h.Client(socket_path, timeout=10) as c:
                status, _ = c.call("Health", pb.HealthRequest())
                assert status.code == pb.OK
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            log.seek(0)
            text = log.read().decode("utf-8", "replace")
        assert "listening socket=inherited fd" in text, text
        assert "http endpoint listening address=inherited fd" in text, text
