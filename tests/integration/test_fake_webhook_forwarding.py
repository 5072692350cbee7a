"""The fake Stripe forwards the events it emits to a webhook URL, as Stripe does.

Fake-only: no daemon. A `Receiver` (http.server on 127.0.0.1, in a thread)
stands in for the daemon's `POST /stripe/webhook`: it checks each
delivery's `Stripe-Signature` with the secret and answers 503 to the first
delivery of an event and 200 afterwards. Events come from checkout
sessions created through the fake's API and completed at "Stripe"
(`/_fake/sessions/{id}/complete`).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import checkout_support as cs
import paymentsd_harness as h
import webhook_support as ws
from fakestripe.formcodec import encode

SESSION_PARAMS = {
    "mode": "payment",
    "line_items": [{"price_data": {"currency": "usd", "unit_amount": 500,
                                   "product_data": {"name": "Widget"}},
                    "quantity": 2}],
    "metadata": {"deal_id": "d1", "payment_id": "p1"},
    "success_url": "https://shop.example/success",
    "cancel_url": "https://shop.example/cancel",
}
SIGNATURE_RE = re.compile(r"t=(\d+),v1=([0-9a-f]{64})")
TOLERANCE = 300  # seconds, as Stripe's libraries check the signature's timestamp


# ---------------------------------------------------------------------------
# The receiving end


class Receiver:
    """A webhook endpoint on 127.0.0.1.

    A delivery with a bad signature gets 400; otherwise the first delivery of
    an event gets 503 (if `fail_first`) and later ones 200. `on_delivery(event)`,
    if given, runs before the answer. Every POST is kept in `posts`.
    """

    PATH = "/stripe/webhook"

    def __init__(self, secret: str = h.WEBHOOK_SECRET, fail_first: bool = True, on_delivery=None):
        self.secret, self.fail_first, self.on_delivery = secret, fail_first, on_delivery
        self.posts: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver._answer(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.PATH}"

    def signature_ok(self, header: str | None, body: bytes) -> bool:
        match = SIGNATURE_RE.fullmatch(header or "")
        if match is None:
            return False
        timestamp, digest = int(match[1]), match[2]
        return (abs(time.time() - timestamp) <= TOLERANCE
                and digest == ws.hmac_hex(self.secret, body, timestamp))

    def _answer(self, path: str, headers: dict, body: bytes) -> int:
        signed = self.signature_ok(headers.get("Stripe-Signature"), body)
        event = json.loads(body) if signed else None
        with self.lock:
            seen = event is not None and any(p["event_id"] == event["id"] for p in self.posts)
            post = {"path": path, "headers": headers, "body": body, "signature_ok": signed,
                    "event_id": event and event["id"], "event_type": event and event["type"]}
            self.posts.append(post)
        if event is not None and self.on_delivery is not None:
            self.on_delivery(event)
        post["status"] = 400 if not signed else 503 if self.fail_first and not seen else 200
        return post["status"]

    def received(self) -> list[tuple]:
        with self.lock:
            return [(p["event_id"], p.get("status")) for p in self.posts]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


# ---------------------------------------------------------------------------
# Making events at the fake


def create_session(fake: cs.FakeStripeHandle) -> dict:
    """A checkout session made through the fake's API (a form POST, as the daemon sends)."""
    req = urllib.request.Request(
        fake.url + "/v1/checkout/sessions", data=encode(SESSION_PARAMS).encode(), method="POST",
        headers={"Authorization": f"Bearer {fake.api_key}",
                 "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def paid_session(fake: cs.FakeStripeHandle) -> tuple[dict, str]:
    """A session completed and paid at Stripe, and the id of its checkout.session.completed."""
    session = create_session(fake)
    fake.complete_session(session["id"])
    return session, ws.event_id_for(fake, session["id"], ws.COMPLETED)


def attempts(deliveries: list[dict]) -> list[tuple]:
    return [(d["event_id"], d["attempt"], d["status"], d["outcome"]) for d in deliveries]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------


def test_an_event_is_forwarded_signed_and_a_503_is_retried(fake_stripe, receiver):
    r = receiver()
    assert fake_stripe.forward_webhooks(r.url) == {"url": r.url, "retries": 10, "pending": 0}
    _, event_id = paid_session(fake_stripe)

    log = fake_stripe.wait_webhooks_idle()
    assert attempts(log) == [(event_id, 1, 503, "retrying"), (event_id, 2, 200, "delivered")]
    assert log[0]["retry_in"] == 0.2 and log[1]["retry_in"] is None
    assert log[1]["at"] - log[0]["at"] >= 0.2 - 0.01, "the retry did not wait its backoff"
    assert all(d["url"] == r.url and d["event_type"] == ws.COMPLETED and d["error"] is None
               for d in log)
    assert r.received() == [(event_id, 503), (event_id, 200)]

    exact_body, _ = ws.delivery(fake_stripe, event_id)
    for post in r.posts:
        assert post["path"] == Receiver.PATH
        assert post["signature_ok"], f"bad signature: {post['headers'].get('Stripe-Signature')}"
        assert post["body"] == exact_body, "the forwarded body is not the event's exact JSON"
        assert post["headers"]["Content-Type"] == "application/json; charset=utf-8"
        assert post["headers"]["User-Agent"] == "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
    assert json.loads(exact_body)["id"] == event_id

    assert fake_stripe.counters()["webhook_deliveries"] == {
        "attempts": 2, "delivered": 1, "failed_attempts": 1, "gave_up": 0, "pending": 0}
    time.sleep(0.5)
    assert len(r.posts) == 2, "a delivered event was posted again"
    assert fake_stripe.webhook_deliveries(event_id) == log


def test_nothing_is_posted_with_forwarding_off(fake_stripe, receiver):
    r = receiver()
    assert fake_stripe.control("GET", "/_fake/webhooks") == {"url": None, "retries": 10,
                                                             "pending": 0}
    paid_session(fake_stripe)  # off by default

    fake_stripe.forward_webhooks(r.url)
    fake_stripe.stop_forwarding_webhooks()
    paid_session(fake_stripe)  # off again

    time.sleep(0.5)
    assert r.posts == []
    assert fake_stripe.webhook_deliveries() == []
    assert fake_stripe.counters()["webhook_deliveries"]["attempts"] == 0


def test_turning_forwarding_off_drops_pending_retries(fake_stripe, receiver):
    r = receiver()
    fake_stripe.forward_webhooks(r.url)
    _, event_id = paid_session(fake_stripe)
    deadline = time.monotonic() + 10
    while not fake_stripe.webhook_deliveries():
        assert time.monotonic() < deadline, "the event was never forwarded"
        time.sleep(0.01)
    stopped_at = time.time()
    assert fake_stripe.stop_forwarding_webhooks()["pending"] == 0
    posted = len(r.posts)

    time.sleep(1.0)  # past the retry's backoff (0.2 s)
    log = fake_stripe.webhook_deliveries()
    assert attempts(log[:1]) == [(event_id, 1, 503, "retrying")]
    assert all(d["at"] <= stopped_at for d in log), f"an attempt after forwarding stopped: {log}"
    assert len(r.posts) == posted and all(status != 200 for _, status in r.received())


def test_events_are_forwarded_in_emission_order(fake_stripe, receiver):
    r = receiver()
    fake_stripe.forward_webhooks(r.url)
    session, completed = paid_session(fake_stripe)
    intent = fake_stripe.session(session["id"])["payment_intent"]
    fake_stripe.control("POST", "/_fake/refunds", {"payment_intent": intent, "amount": 300})

    emitted = [e["id"] for e in ws.fake_events(fake_stripe)]
    assert emitted[0] == completed and len(emitted) == 3  # + refund.created, charge.refunded
    log = fake_stripe.wait_webhooks_idle()
    assert [d["event_id"] for d in log if d["attempt"] == 1] == emitted
    assert [d["event_id"] for d in log if d["outcome"] == "delivered"] == emitted
    assert [e for e, status in r.received() if status == 200] == emitted


def test_the_emitting_call_does_not_wait_and_the_receiver_may_call_the_fake(fake_stripe, receiver):
    """The receiver, while handling a delivery, reads the session from the fake and makes the
    fake emit another event (as the daemon may): nothing deadlocks, the emitting calls return
    while the delivery is under way."""
    other = create_session(fake_stripe)
    in_delivery, release = threading.Event(), threading.Event()
    seen_by_receiver: dict = {}

    def on_delivery(event):
        if event["type"] != ws.COMPLETED or in_delivery.is_set():
            return
        in_delivery.set()
        seen_by_receiver["session"] = fake_stripe.session(event["data"]["object"]["id"])
        seen_by_receiver["expired"] = fake_stripe.expire_session_at_stripe(other["id"])
        release.wait(10)

    r = receiver(fail_first=False, on_delivery=on_delivery)
    fake_stripe.forward_webhooks(r.url)
    session, completed = paid_session(fake_stripe)  # returns while the receiver holds on
    assert in_delivery.wait(10), "the event was not forwarded"
    assert fake_stripe.control("GET", "/_fake/webhooks")["pending"] >= 1
    release.set()

    log = fake_stripe.wait_webhooks_idle()
    expired = ws.event_id_for(fake_stripe, other["id"], ws.EXPIRED)
    assert attempts(log) == [(completed, 1, 200, "delivered"), (expired, 1, 200, "delivered")]
    assert seen_by_receiver["session"]["id"] == session["id"]
    assert seen_by_receiver["expired"]["status"] == "expired"


def test_connection_errors_are_retried_until_the_retries_run_out(fake_stripe):
    url = f"http://127.0.0.1:{closed_port()}/stripe/webhook"
    fake_stripe.forward_webhooks(url, retries=2)
    _, event_id = paid_session(fake_stripe)

    log = fake_stripe.wait_webhooks_idle()
    assert attempts(log) == [(event_id, 1, None, "retrying"), (event_id, 2, None, "retrying"),
                             (event_id, 3, None, "gave_up")]
    assert [d["retry_in"] for d in log] == [0.2, 0.5, None]
    assert all("ConnectionRefused" in d["error"] for d in log), log
    assert fake_stripe.counters()["webhook_deliveries"] == {
        "attempts": 3, "delivered": 0, "failed_attempts": 3, "gave_up": 1, "pending": 0}


def test_a_secret_given_at_run_time_signs_the_deliveries(fake_stripe, receiver):
    r = receiver(secret="whsec_rotated", fail_first=False)
    fake_stripe.forward_webhooks(r.url, retries=0)
    _, first = paid_session(fake_stripe)  # signed with the fake's secret: refused
    assert attempts(fake_stripe.wait_webhooks_idle()) == [(first, 1, 400, "gave_up")]

    fake_stripe.forward_webhooks(r.url, secret="whsec_rotated")
    _, second = paid_session(fake_stripe)
    assert attempts(fake_stripe.wait_webhooks_idle())[1:] == [(second, 1, 200, "delivered")]
    assert [p["signature_ok"] for p in r.posts] == [False, True]


def test_reset_and_control_errors(fake_stripe, receiver):
    r = receiver(fail_first=False)
    fake_stripe.forward_webhooks(r.url)
    paid_session(fake_stripe)
    fake_stripe.wait_webhooks_idle()
    fake_stripe.reset()
    assert fake_stripe.control("GET", "/_fake/webhooks") == {"url": None, "retries": 10,
                                                             "pending": 0}
    assert fake_stripe.webhook_deliveries() == []

    for body in ({}, {"url": "https://127.0.0.1/hook"}, {"url": "127.0.0.1:80"},
                 {"url": r.url, "retries": -1}, {"url": r.url, "retries": "3"},
                 {"url": r.url, "delay": 1}):
        status, answer = fake_stripe._http("POST", "/_fake/webhooks", body)
        assert status == 400, f"{body} -> {status} {answer}"
    assert fake_stripe.control("GET", "/_fake/webhooks")["url"] is None


def test_command_line_forward_to(receiver):
    r = receiver()
    assert "--forward-to" in subprocess.run(
        [sys.executable, "-m", "fakestripe", "--help"], cwd=h.REPO_ROOT, capture_output=True,
        text=True, timeout=20).stdout
    bad = subprocess.run([sys.executable, "-m", "fakestripe", "--port", "0",
                          "--forward-to", "https://example.com/hook"],
                         cwd=h.REPO_ROOT, capture_output=True, text=True, timeout=20)
    assert bad.returncode == 2 and "--forward-to" in bad.stderr

    process = subprocess.Popen(
        [sys.executable, "-m", "fakestripe", "--port", "0", "--quiet", "--api-key", "sk_test_cli",
         "--webhook-secret", h.WEBHOOK_SECRET, "--forward-to", r.url, "--forward-retries", "3"],
        cwd=h.REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("fakestripe listening on http://127.0.0.1:"), line
        fake = cs.FakeStripeHandle(types.SimpleNamespace(url=line.rsplit(" ", 1)[1],
                                                         api_key="sk_test_cli"))
        assert fake.control("GET", "/_fake/webhooks") == {"url": r.url, "retries": 3, "pending": 0}
        _, event_id = paid_session(fake)
        assert attempts(fake.wait_webhooks_idle()) == [(event_id, 1, 503, "retrying"),
                                                       (event_id, 2, 200, "delivered")]
        assert all(p["signature_ok"] for p in r.posts)
        fake.reset()  # forwarding stays on: it is what the fake was started with
        assert fake.control("GET", "/_fake/webhooks")["url"] == r.url
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
