"""The optional HTTP endpoint (protocol.md section 8), with real HTTP requests against the real
binary: Stripe's deliveries to POST /stripe/webhook take exactly HandleStripeEvent's path and are
answered 200 only once durable; /metrics is Prometheus' text; /healthz; limits and time limits;
off unless configured."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse

import pytest
from prometheus_client.parser import text_string_to_metric_families

import checkout_support as cs
import paymentsd_harness as h
import webhook_support as ws
from http_support import free_port, request, wait_listening

# The guarantees hold on either store: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_stores

SKU = "http-sku"


@pytest.fixture
def http_daemon(pay_daemon):
    """(daemon, port): a daemon with its HTTP endpoint on a loopback port; time limits of 1 s."""
    port = free_port()
    d = pay_daemon(env={"PAYMENTSD_HTTP_LISTEN": f"127.0.0.1:{port}", "PAYMENTSD_FRAME_TIMEOUT": "1",
                        "PAYMENTSD_JANITOR_INTERVAL": "3600"})
    wait_listening(d)
    return d, port


def post_event(port: int, payload: bytes, signature: str):
    return request(port, "POST", "/stripe/webhook", payload,
                   {"Stripe-Signature": signature, "Content-Type": "application/json"})


def _paid_session(d: h.Daemon, fake_stripe, deal: str):
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 100)
    pay = ws.open_checkout(c, deal, SKU, 1)
    fake_stripe.complete_session(pay.checkout_session_id, paid=True)
    return pay, ws.session_delivery(fake_stripe, pay.checkout_session_id, ws.COMPLETED)


def test_a_signed_delivery_is_applied_and_answered_200_and_its_redelivery_is_a_duplicate(http_daemon, fake_stripe, pb):
    d, port = http_daemon
    pay, (body, sig) = _paid_session(d, fake_stripe, "deal-http-1")
    status, headers, answer = post_event(port, body, sig)
    assert status == 200, answer
    assert headers["Content-Type"].startswith("application/json")
    reply = json.loads(answer)
    assert reply["outcome"] == "APPLIED" and reply["event_id"] == ws.event_id_of(body), reply
    paid = ws.wait_payment_status(d, "deal-http-1", pb.PAYMENT_STATUS_PAID, timeout=5)
    assert paid.status == pb.PAYMENT_STATUS_PAID and paid.order_id

    status, _, answer = post_event(port, body, sig)
    assert status == 200 and json.loads(answer)["outcome"] == "DUPLICATE", answer


@pytest.mark.parametrize("case", ["bad_signature", "other_secret", "stale_timestamp", "no_header", "not_an_event"])
def test_deliveries_stripe_must_not_retry_are_answered_400_and_change_nothing(http_daemon, fake_stripe, pb, case):
    d, port = http_daemon
    pay, (body, sig) = _paid_session(d, fake_stripe, f"deal-http-{case}")
    if case == "bad_signature":
        sig = sig[:-4] + ("0000" if not sig.endswith("0000") else "1111")
    elif case == "other_secret":
        sig = ws.sign(body, secret="whsec_not_ours")
    elif case == "stale_timestamp":
        sig = ws.sign(body, timestamp=int(time.time()) - 3600)
    elif case == "no_header":
        sig = ""
    elif case == "not_an_event":
        body = b'{"hello": "world"}'
        sig = ws.sign(body)
    status, _, answer = post_event(port, body, sig)
    assert status == 400, f"{case}: {status} {answer!r}"
    assert "error" in json.loads(answer)
    with d.client(timeout=30) as c:
        assert cs.list_payments(c, f"deal-http-{case}")[0].status == pb.PAYMENT_STATUS_CREATED


def test_ten_concurrent_deliveries_of_one_event_make_one_order_and_are_all_answered_200(http_daemon, fake_stripe, pb):
    d, port = http_daemon
    pay, (body, sig) = _paid_session(d, fake_stripe, "deal-http-burst")
    answers: list = []
    gate = threading.Barrier(10)

    def one():
        gate.wait()
        status, _, answer = post_event(port, body, sig)
        answers.append((status, json.loads(answer).get("outcome")))

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 10 and all(s == 200 for s, _ in answers), answers
    outcomes = sorted(o for _, o in answers)
    assert outcomes.count("APPLIED") + outcomes.count("QUEUED") == 1, outcomes
    assert outcomes.count("DUPLICATE") == 9, outcomes
    with d.client(timeout=30) as c:
        ws.wait_payment_status(d, "deal-http-burst", pb.PAYMENT_STATUS_PAID, timeout=15)
        assert len(ws.paid_transitions(c, "deal-http-burst")) == 1


def test_a_body_over_the_limit_is_answered_413_and_the_endpoint_still_serves(http_daemon):
    d, port = http_daemon
    status, _, _ = request(port, "POST", "/stripe/webhook", b"x" * ((1 << 20) + 1),
                           {"Stripe-Signature": "t=1,v1=00"})
    assert status == 413
    assert request(port, "GET", "/healthz")[0] == 200


def test_a_request_trickled_byte_by_byte_is_cut_off_and_the_daemon_still_serves(http_daemon):
    d, port = http_daemon
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    started = time.monotonic()
    closed_by_server = False
    try:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"y" * 200:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_by_server = True
                break
            time.sleep(0.05)
            if time.monotonic() - started > 8:
                break
        if not closed_by_server:
            s.settimeout(5)
            try:
                answer = s.recv(4096)
            except ConnectionResetError:
                answer = b""
            closed_by_server = answer == b"" or answer.startswith(b"HTTP/1.1 408")
    finally:
        s.close()
    assert closed_by_server, "a request that took longer than the time limit to arrive was not cut off"
    assert time.monotonic() - started < 8
    assert request(port, "GET", "/healthz")[0] == 200
    with d.client(timeout=10) as c:
        assert c.call("Health", h.pb().HealthRequest())[0].code == h.pb().OK


def test_metrics_is_prometheus_text_with_every_gauge(http_daemon):
    d, port = http_daemon
    status, headers, body = request(port, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for gauge in ("paymentsd_operations_pending", "paymentsd_operations_stuck", "paymentsd_stripe_events_pending",
                  "paymentsd_stripe_events_orphaned", "paymentsd_checkouts_overdue", "paymentsd_payments_late",
                  "paymentsd_payments_over_refunded", "paymentsd_claims_held_without_checkout",
                  "paymentsd_payments_outcome_unknown", "paymentsd_stripe_events_cursor_age_seconds",
                  "paymentsd_connections_open"):
        assert gauge in families and families[gauge].type == "gauge", f"{gauge} missing or not a gauge"
    # The same exposition as the Metrics RPC.
    rpc_families = {f.name for f in text_string_to_metric_families(d.metrics_text())}
    assert set(families) == rpc_families


def test_healthz_and_unknown_paths_and_methods(http_daemon):
    d, port = http_daemon
    status, _, body = request(port, "GET", "/healthz")
    assert (status, body) == (200, b"serving\n")
    assert request(port, "GET", "/v1/CreateCheckout")[0] == 404
    assert request(port, "POST", "/payments.v1.Payments/CreateCheckout", b"{}")[0] == 404
    status, headers, _ = request(port, "GET", "/stripe/webhook")
    assert status == 405 and headers["Allow"] == "POST"
    assert request(port, "DELETE", "/metrics")[0] == 405


def test_keep_alive_serves_several_requests_on_one_connection(http_daemon):
    d, port = http_daemon
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(5):
            conn.request("GET", "/healthz")
            res = conn.getresponse()
            assert res.status == 200 and res.read() == b"serving\n"
    finally:
        conn.close()


def test_the_endpoint_is_off_unless_configured(pay_daemon):
    d = pay_daemon(env={"PAYMENTSD_JANITOR_INTERVAL": "3600"})
    with d.client(timeout=10) as c:
        assert c.call("Health", h.pb().HealthRequest())[0].code == h.pb().OK
    assert "http endpoint" not in d.stderr_text()


def test_a_listen_address_that_is_not_one_of_the_three_forms_stops_start_up(make_daemon):
    d = make_daemon(env={"PAYMENTSD_HTTP_LISTEN": "localhost:8080"})
    done = d.run_to_exit(timeout=15)
    assert done.returncode == 78, done
    assert "PAYMENTSD_HTTP_LISTEN" in d.stderr_text()


def test_sigterm_answers_the_request_in_hand_then_stops(pay_daemon):
    port = free_port()
    # Every call waits 1 s before its handler: the request is in hand when SIGTERM comes.
    d = pay_daemon(env={"PAYMENTSD_HTTP_LISTEN": f"127.0.0.1:{port}", "PAYMENTSD_TEST_DELAY_MS": "1000"})
    wait_listening(d)
    answers = []
    t = threading.Thread(target=lambda: answers.append(request(port, "GET", "/metrics")))
    t.start()
    time.sleep(0.3)
    d.send_signal(15)
    t.join(15)
    assert answers and answers[0][0] == 200, answers
    assert answers[0][1].get("Connection") == "close"
    assert d.wait(15) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# ---------------------------------------------------------------------------
# The fake's own deliveries to the endpoint: the flow a shop sees under `make run`.


def _forwarding_daemon(pay_daemon, fake_stripe, env=None):
    port = free_port()
    d = pay_daemon(env={"PAYMENTSD_HTTP_LISTEN": f"127.0.0.1:{port}", "PAYMENTSD_JANITOR_INTERVAL": "3600",
                        **(env or {})})
    wait_listening(d)
    fake_stripe.forward_webhooks(f"http://127.0.0.1:{port}/stripe/webhook", secret=h.WEBHOOK_SECRET)
    return d, port


def test_a_checkout_paid_on_the_fakes_page_ends_paid_with_one_order_without_confirm(pay_daemon, fake_stripe, pb):
    d, port = _forwarding_daemon(pay_daemon, fake_stripe)
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, "deal-page", SKU, 2)
    # The customer presses "Pay" on the page the session's url points to (its redirect to the
    # shop's success_url is not followed).
    page = urllib.parse.urlsplit(pay.checkout_url)
    status, _, _ = request(page.port, "POST", page.path, b"action=pay",
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert status in (302, 303), f"the pay page answered {status}"
    paid = ws.wait_payment_status(d, "deal-page", pb.PAYMENT_STATUS_PAID, timeout=15)
    assert paid.order_id, "paid without an order"
    assert len(ws.paid_transitions(c, "deal-page")) == 1
    fake_stripe.wait_webhooks_idle(timeout=15)
    delivered = [x for x in fake_stripe.webhook_deliveries() if x["event_type"] == ws.COMPLETED]
    assert delivered and all(x["status"] == 200 for x in delivered), delivered


@pytest.mark.sqlite_only("the 503 comes from another process's SQLite write lock")
def test_a_delivery_answered_503_is_retried_by_the_fake_and_applied_once(pay_daemon, fake_stripe, pb):
    from test_storage_trouble import LockHolder

    d, port = _forwarding_daemon(pay_daemon, fake_stripe, env={"PAYMENTSD_BUSY_TIMEOUT_MS": "100"})
    c = d.client(timeout=30)
    cs.set_stock(c, SKU, 10)
    pay = ws.open_checkout(c, "deal-503", SKU, 1)
    # Another process holds the database's write lock: the event cannot be stored, so 503.
    lock = LockHolder(d.db_path).take()
    try:
        fake_stripe.complete_session(pay.checkout_session_id, paid=True)
        deadline = time.monotonic() + 15
        while not any(x["event_type"] == ws.COMPLETED and x["status"] == 503
                      for x in fake_stripe.webhook_deliveries()):
            assert time.monotonic() < deadline, f"no 503 seen: {fake_stripe.webhook_deliveries()}"
            time.sleep(0.05)
    finally:
        lock.release()
    paid = ws.wait_payment_status(d, "deal-503", pb.PAYMENT_STATUS_PAID, timeout=30)
    assert paid.order_id
    fake_stripe.wait_webhooks_idle(timeout=30)
    attempts = [x for x in fake_stripe.webhook_deliveries() if x["event_type"] == ws.COMPLETED]
    assert attempts[0]["status"] == 503 and attempts[-1]["status"] == 200, attempts
    assert len(ws.paid_transitions(c, "deal-503")) == 1
