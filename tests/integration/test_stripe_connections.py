"""Stripe connections stay open (issue 13, item 4): calls reuse a few kept-alive connections
instead of opening one (a TCP, against the real Stripe also a TLS, handshake) per call, and the
calls in flight are bounded (each holds a connection and a blocked thread); more wait their turn
and are all answered."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading

import pytest

import checkout_support as cs
import paymentsd_harness as h
from checkout_support import checkout_request, item

QUIET = {"PAYMENTSD_JANITOR_INTERVAL": "3600"}
SKU = "conn-sku"
MAX_CALLS_IN_FLIGHT = 16  # StripeClient.Configuration.maxCallsInFlight


def _opened(d: h.Daemon) -> int:
    samples, _ = h.parse_prometheus(d.metrics_text())
    found = h.find_samples(samples, "paymentsd_stripe_connections_opened_total")
    assert found, "Metrics has no paymentsd_stripe_connections_opened_total"
    return int(found[0][2])


def test_sequential_checkouts_reuse_one_connection(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 1000)
    accepted_before = fake_stripe.counters()["connections_accepted"]
    for n in range(30):
        cs.create_ok(c, checkout_request(f"deal-conn-{n}", [item(SKU, 1, 500)]))
    accepted = fake_stripe.counters()["connections_accepted"] - accepted_before
    assert 1 <= accepted <= 2, f"30 sequential checkouts opened {accepted} connections to Stripe"
    assert 1 <= _opened(d) <= 3, f"the daemon counts {_opened(d)} connections opened"


def test_concurrent_checkouts_are_bounded_and_all_answered(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env=QUIET)
    setup = d.client(timeout=30)
    cs.set_stock(setup, SKU, 1000)
    # Every session create waits, so the calls pile up behind the bound.
    fake_stripe.add_fault(cs.SESSIONS_ROUTE, "delay", ms=300, times=48)
    results: dict[int, str] = {}

    def one(n: int):
        with d.client(timeout=60) as c:
            status, _ = c.call("CreateCheckout", checkout_request(f"deal-burst-{n}", [item(SKU, 1, 500)]),
                               timeout=60)
            results[n] = h.describe_status(status)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    bad = {n: r for n, r in results.items() if not r.startswith("OK")}
    assert len(results) == 48 and not bad, f"answered {len(results)} of 48; not OK: {bad}"
    opened = _opened(d)
    assert opened <= MAX_CALLS_IN_FLIGHT + 1, (
        f"48 concurrent checkouts opened {opened} connections; at most {MAX_CALLS_IN_FLIGHT} calls may be in flight")
    assert fake_stripe.request_count(cs.SESSIONS_ROUTE) == 48


# ---------------------------------------------------------------------------
# Behind TLS (bench/tls-terminator.py in front of the fake, its own CA): the daemon verifies
# Stripe's certificate against STRIPE_CA_FILE, and kept-open connections save the handshakes.

TERMINATOR = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "tls-terminator.py")


@pytest.fixture
def tls_fake(fake_stripe):
    """(https URL, CA file) of a TLS terminator in front of fake_stripe."""
    port = int(fake_stripe.url.rsplit(":", 1)[1].strip("/"))
    with tempfile.TemporaryDirectory() as directory:
        proc = subprocess.Popen([sys.executable, TERMINATOR, "--target-port", str(port), "--dir", directory],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert "listening on https://" in line, f"the TLS terminator did not start: {line!r}"
            url, ca = line.split("listening on ", 1)[1].split()
            yield url, ca.removeprefix("ca=")
        finally:
            proc.stdin.close()
            proc.wait(10)


def test_over_tls_with_its_ca_checkouts_work_and_reuse_one_connection(start_daemon, fake_stripe, tls_fake, pb):
    url, ca = tls_fake
    d = start_daemon(env={**QUIET, "STRIPE_API_BASE": url, "STRIPE_CA_FILE": ca})
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 1000)
    for n in range(20):
        cs.create_ok(c, checkout_request(f"deal-tls-{n}", [item(SKU, 1, 500)]))
    assert 1 <= _opened(d) <= 2, f"20 checkouts over TLS opened {_opened(d)} connections (a handshake each)"


def test_over_tls_a_certificate_not_from_the_trusted_ca_is_refused(start_daemon, fake_stripe, tls_fake, pb):
    url, _ = tls_fake
    # No STRIPE_CA_FILE: the system's authorities, which never signed the terminator's certificate.
    d = start_daemon(env={**QUIET, "STRIPE_API_BASE": url})
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 1000)
    status, _ = c.call("CreateCheckout", checkout_request("deal-tls-untrusted", [item(SKU, 1, 500)]), timeout=30)
    cs.expect_error(status, "UNAVAILABLE", "stripe_unavailable", "a Stripe whose certificate is not trusted")
    assert fake_stripe.request_count(cs.SESSIONS_ROUTE) == 0, "a request went through an untrusted connection"
