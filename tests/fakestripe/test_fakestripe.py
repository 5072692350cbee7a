"""The fake Stripe behaves like Stripe where paymentsd depends on it.

One fake serves the whole module and is reset before each test; `Client`
talks to it over one keep-alive connection, as an HTTP client pool of one.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
# So that a bare `pytest` finds the package, as `python3 -m pytest` from the root does.
sys.path.insert(0, str(ROOT))

from fakestripe import FakeStripe  # noqa: E402
from fakestripe.errors import ParamError  # noqa: E402
from fakestripe.formcodec import encode, nest, parse_pairs  # noqa: E402

SESSIONS = "/v1/checkout/sessions"
API_KEY = "sk_test_unit_4242"
WEBHOOK_SECRET = "whsec_unit_secret"


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Reply({self.status}, {self.body[:300]!r})"


class Client:
    """Talks to the fake over one keep-alive connection, like an HTTP client pool of one."""

    def __init__(self, url: str, api_key: str = API_KEY):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.api_key = api_key
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict | None = None) -> Reply:
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        return Reply(response.status, response.headers, response.read())

    def _auth(self, key: str | None, extra: dict | None) -> dict:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        headers.update(extra or {})
        return headers

    def post(self, path: str, params: dict | str | None = None, key: str | None = None,
             headers: dict | None = None) -> Reply:
        body = params if isinstance(params, str) else encode(params or {})
        headers = {"Content-Type": "application/x-www-form-urlencoded", **self._auth(key, headers)}
        return self.request("POST", path, body.encode(), headers)

    def get(self, path: str, params: dict | None = None, headers: dict | None = None) -> Reply:
        query = encode(params or {})
        return self.request("GET", f"{path}?{query}" if query else path, None, self._auth(None, headers))

    def control(self, method: str, path: str, body: dict | None = None) -> Reply:
        data = json.dumps(body).encode() if body is not None else None
        return self.request(method, path, data, {"Content-Type": "application/json"})

    def close(self):
        self.conn.close()


@pytest.fixture(scope="module")
def fake():
    with FakeStripe(port=0, api_key=API_KEY, webhook_secret=WEBHOOK_SECRET) as server:
        yield server


@pytest.fixture
def client(fake):
    c = Client(fake.url)
    assert c.control("POST", "/_fake/reset").status == 200
    yield c
    c.close()


def session_params(**overrides) -> dict:
    """A payment-mode session as paymentsd creates one."""
    params = {
        "mode": "payment",
        "line_items": [{
            "price_data": {"currency": "usd", "unit_amount": 500,
                           "product_data": {"name": "Widget"}},
            "quantity": 2,
        }],
        "metadata": {"deal_id": "d1", "payment_id": "p1"},
        "client_reference_id": "p1",
        "success_url": "https://shop.example/ok?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://shop.example/cancel",
    }
    params.update(overrides)
    return params


def create_session(client, key=None, **overrides):
    reply = client.post(SESSIONS, session_params(**overrides), key=key)
    assert reply.status == 200, reply
    return reply.json


def paid_session(client, **overrides):
    session = create_session(client, **overrides)
    assert client.control("POST", f"/_fake/sessions/{session['id']}/complete", {"paid": True}).status == 200
    return client.get(f"{SESSIONS}/{session['id']}").json


def counters(client):
    return client.control("GET", "/_fake/counters").json


def events(client, **params):
    return client.get("/v1/events", params).json["data"]


# -- wire format -----------------------------------------------------------------

def test_form_codec_round_trip_and_arrays():
    params = {"a": [{"b": "1"}, {"b": "2"}], "metadata": {"0": "zero"}, "flag": True}
    assert nest(parse_pairs(encode(params))) == {
        "a": {"0": {"b": "1"}, "1": {"b": "2"}}, "metadata": {"0": "zero"}, "flag": "true"}
    assert nest(parse_pairs("types[]=x&types[]=y")) == {"types": {"0": "x", "1": "y"}}
    with pytest.raises(ParamError):
        nest(parse_pairs("a=1&a[b]=2"))


def test_create_session_from_nested_form(client):
    reply = client.post(SESSIONS, session_params(expires_at=int(time.time()) + 3600), key="k-create")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Request-Id"].startswith("req_")
    session = reply.json
    assert session["object"] == "checkout.session"
    assert session["id"].startswith("cs_test_")
    assert (session["status"], session["payment_status"], session["mode"]) == ("open", "unpaid", "payment")
    assert session["amount_total"] == 1000 and session["currency"] == "usd"
    assert session["metadata"] == {"deal_id": "d1", "payment_id": "p1"}
    assert session["client_reference_id"] == "p1"
    assert session["url"] == f"http://127.0.0.1:{client.port}/pay/{session['id']}"
    assert "_secret_" in session["client_secret"]
    assert session["customer_details"] is None
    assert session["payment_intent"] is None
    assert "line_items" not in session  # only when expanded

    fetched = client.get(f"{SESSIONS}/{session['id']}", {"expand": ["line_items"]}).json
    assert fetched["line_items"]["data"][0]["amount_total"] == 1000
    assert fetched["line_items"]["data"][0]["description"] == "Widget"


def test_keep_alive_serves_many_requests_on_one_connection(client):
    for _ in range(5):
        create_session(client)
    assert len(client.get(SESSIONS, {"limit": 100}).json["data"]) == 5


def test_authentication(client, fake):
    anonymous = client.request("GET", SESSIONS)
    assert anonymous.status == 401 and anonymous.json["error"]["type"] == "invalid_request_error"
    wrong = Client(fake.url, api_key="sk_test_somebody_elses_key_9999").get(SESSIONS)
    assert wrong.status == 401
    assert "sk_test_somebody" not in wrong.json["error"]["message"]  # masked like Stripe
    assert wrong.json["error"]["message"].endswith("9999")
    assert counters(client)["auth_failures"] == 2


def test_unknown_route(client):
    reply = client.get("/v1/customers")
    assert reply.status == 404 and "Unrecognized request URL" in reply.json["error"]["message"]


# -- parameter check -------------------------------------------------------------

@pytest.mark.parametrize("params, code, param", [
    ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 5, "colour": "red",
                                     "product_data": {"name": "W"}}, "quantity": 1}]},
     "parameter_unknown", "line_items[0][price_data][colour]"),
    ({"payment_method_types": ["card"]}, "parameter_unknown", "payment_method_types"),
    ({"expires_at": "tomorrow"}, "parameter_invalid_integer", "expires_at"),
    ({"line_items": [{"price_data": {"unit_amount": 5, "product_data": {"name": "W"}},
                      "quantity": 1}]},
     "parameter_missing", "line_items[0][price_data][currency]"),
    ({"mode": "rent"}, None, "mode"),
    ({"allow_promotion_codes": "yes"}, None, "allow_promotion_codes"),
    ({"metadata": "flat"}, None, "metadata"),
    ({"metadata": {"k": "v" * 501}}, None, "metadata[k]"),
])
def test_parameter_check_refuses_what_stripe_refuses(client, params, code, param):
    reply = client.post(SESSIONS, session_params(**params))
    assert reply.status == 400, reply
    error = reply.json["error"]
    assert error["type"] == "invalid_request_error"
    assert error.get("code") == code and error["param"] == param
    if code == "parameter_unknown":
        assert error["message"] == f"Received unknown parameter: {param}"
    failures = counters(client)
    assert failures["param_check_failures"] == 1 and failures["sessions_created"] == 0
    assert failures["param_check_failure_details"][0]["message"] == error["message"]


@pytest.mark.parametrize("offset, accepted", [(29 * 60, False), (30 * 60 + 5, True),
                                              (24 * 3600 - 5, True), (24 * 3600 + 60, False)])
def test_expires_at_must_be_30_minutes_to_24_hours_away(client, offset, accepted):
    reply = client.post(SESSIONS, session_params(expires_at=int(time.time()) + offset))
    assert (reply.status == 200) == accepted, reply
    if not accepted:
        assert reply.json["error"]["param"] == "expires_at"


def test_session_business_rules(client):
    missing_mode = session_params()
    del missing_mode["mode"]
    assert client.post(SESSIONS, missing_mode).json["error"]["code"] == "parameter_missing"
    no_quantity = session_params(line_items=[{"price": "price_123"}])
    assert client.post(SESSIONS, no_quantity).json["error"]["param"] == "line_items[0][quantity]"
    bad_price = client.post(SESSIONS, session_params(line_items=[{"price": "plan_1", "quantity": 1}]))
    assert bad_price.status == 400 and bad_price.json["error"]["code"] == "resource_missing"
    recurring_in_payment = session_params(line_items=[{"quantity": 1, "price_data": {
        "currency": "usd", "unit_amount": 5, "product_data": {"name": "W"},
        "recurring": {"interval": "month"}}}])
    assert client.post(SESSIONS, recurring_in_payment).status == 400


def test_get_params_are_checked_too(client):
    assert client.get(SESSIONS, {"status": "pending"}).status == 400
    assert client.get(SESSIONS, {"limit": "ten"}).json["error"]["code"] == "parameter_invalid_integer"
    assert client.get(SESSIONS, {"limit": 101}).json["error"]["param"] == "limit"
    assert client.get("/v1/events", {"created": {"gte": "x"}}).json["error"]["param"] == "created[gte]"
    assert client.get(f"{SESSIONS}/cs_nope", {"expand": ["customer"]}).json["error"]["param"] == "expand"
    assert counters(client)["param_check_failures"] == 5


def test_json_body_is_refused(client):
    reply = client.request("POST", SESSIONS, json.dumps(session_params()).encode(),
                           {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert reply.status == 400 and counters(client)["sessions_created"] == 0


# -- idempotency -----------------------------------------------------------------

def test_idempotent_replay_is_byte_identical(client):
    first = client.post(SESSIONS, session_params(), key="order-1")
    # A client may encode a dictionary's keys in another order: still the same parameters.
    reordered = dict(reversed(list(session_params().items())))
    second = client.post(SESSIONS, reordered, key="order-1")
    assert (second.status, second.body) == (first.status, first.body)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Original-Request"] == first.headers["Request-Id"]
    assert "Idempotent-Replayed" not in first.headers
    c = counters(client)
    assert c["sessions_created"] == 1 and c["idempotent_replays"] == 1
    assert c["idempotency_keys"][f"POST {SESSIONS}"] == ["order-1", "order-1"]


def test_key_reused_with_other_parameters_or_endpoint_is_refused(client):
    create_session(client, key="order-2")
    other = client.post(SESSIONS, session_params(client_reference_id="p2"), key="order-2")
    assert other.status == 400 and other.json["error"]["type"] == "idempotency_error"
    assert "same parameters" in other.json["error"]["message"]
    elsewhere = client.post("/v1/refunds", {"payment_intent": "pi_x"}, key="order-2")
    assert elsewhere.status == 400 and elsewhere.json["error"]["type"] == "idempotency_error"
    assert counters(client)["sessions_created"] == 1


def test_refused_parameters_do_not_use_up_the_key(client):
    bad = client.post(SESSIONS, session_params(mode="rent"), key="order-3")
    assert bad.status == 400
    good = client.post(SESSIONS, session_params(), key="order-3")
    assert good.status == 200 and "Idempotent-Replayed" not in good.headers


def test_endpoint_errors_are_stored_and_replayed(client):
    first = client.post("/v1/refunds", {"payment_intent": "pi_missing"}, key="refund-1")
    assert first.status == 400 and first.json["error"]["code"] == "resource_missing"
    again = client.post("/v1/refunds", {"payment_intent": "pi_missing"}, key="refund-1")
    assert (again.status, again.body) == (first.status, first.body)
    assert again.headers["Idempotent-Replayed"] == "true"


def test_keys_expire_after_24_hours(client):
    create_session(client, key="old")
    client.control("POST", "/_fake/clock", {"advance_seconds": 24 * 3600})
    again = client.post(SESSIONS, session_params(), key="old")
    assert again.status == 200 and "Idempotent-Replayed" not in again.headers
    assert counters(client)["sessions_created"] == 2


def test_concurrent_requests_with_one_key_make_one_session(client, fake):
    client.control("POST", "/_fake/faults",
                   {"route": f"POST {SESSIONS}", "kind": "delay", "ms": 300})
    replies = []

    def send():
        c = Client(fake.url)
        replies.append(c.post(SESSIONS, session_params(), key="race"))
        c.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status for r in replies)
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}
    for reply in replies:
        if reply.status == 409:
            assert reply.json["error"]["type"] == "idempotency_error"
            assert reply.json["error"]["code"] == "idempotency_key_in_use"
    fresh = [r for r in replies if r.status == 200 and "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1
    assert counters(client)["sessions_created"] == 1


def test_many_concurrent_connections(client, fake):
    replies = []

    def send(i):
        c = Client(fake.url)
        replies.append(c.post(SESSIONS, session_params(client_reference_id=f"p{i}"), key=f"k{i}"))
        c.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in replies] == [200] * 40
    assert counters(client)["sessions_created"] == 40


# -- scripted faults ---------------------------------------------------------------

def test_status_fault_n_times_then_success(client):
    scripted = client.control("POST", "/_fake/faults", {
        "route": f"POST {SESSIONS}", "kind": "status", "status": 500, "times": 2,
        "headers": {"Stripe-Should-Retry": "true"}})
    assert scripted.status == 200
    for _ in range(2):
        reply = client.post(SESSIONS, session_params(), key="retry-me")
        assert reply.status == 500 and reply.json["error"]["type"] == "api_error"
        assert reply.headers["Stripe-Should-Retry"] == "true"
        assert reply.headers["Request-Id"].startswith("req_")
    # The scripted 500s applied nothing and stored nothing under the key.
    reply = client.post(SESSIONS, session_params(), key="retry-me")
    assert reply.status == 200 and "Idempotent-Replayed" not in reply.headers
    c = counters(client)
    assert c["sessions_created"] == 1 and c["faults_injected"] == 2
    assert c["idempotency_keys"][f"POST {SESSIONS}"] == ["retry-me"] * 3


def test_rate_limit_fault(client):
    client.control("POST", "/_fake/faults", {"route": "GET /v1/events", "kind": "status", "status": 429})
    reply = client.get("/v1/events")
    assert reply.status == 429 and reply.json["error"]["code"] == "rate_limit"
    assert client.get("/v1/events").status == 200


def test_fault_route_names_the_template_with_any_placeholder(client):
    session = create_session(client)
    client.control("POST", "/_fake/faults", {"route": "POST /v1/checkout/sessions/{id}/expire",
                                             "kind": "status", "status": 503})
    assert client.post(f"{SESSIONS}/{session['id']}/expire").status == 503
    assert client.post(f"{SESSIONS}/{session['id']}/expire").status == 200
    bad = client.control("POST", "/_fake/faults", {"route": "POST /v1/nothing", "kind": "drop"})
    assert bad.status == 400


def test_delay_fault(client):
    client.control("POST", "/_fake/faults", {"route": f"GET {SESSIONS}", "kind": "delay", "ms": 250})
    started = time.monotonic()
    assert client.get(SESSIONS).status == 200
    assert time.monotonic() - started >= 0.25


def test_apply_then_drop_then_retry_replays(client, fake):
    client.control("POST", "/_fake/faults", {"route": f"POST {SESSIONS}", "kind": "apply_then_drop"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        client.post(SESSIONS, session_params(), key="lost-answer")
    assert counters(client)["sessions_created"] == 1
    retry = Client(fake.url).post(SESSIONS, session_params(), key="lost-answer")
    assert retry.status == 200 and retry.headers["Idempotent-Replayed"] == "true"
    listed = Client(fake.url).get(SESSIONS).json["data"]
    assert [s["id"] for s in listed] == [retry.json["id"]]


def test_replays_suffer_faults_too(client, fake):
    """A fault scripted for the next request on a route is not used up, without effect,
    by a request that is answered from the idempotency store."""
    first = client.post(SESSIONS, session_params(), key="replayed-key")
    assert first.status == 200
    client.control("POST", "/_fake/faults", {"route": f"POST {SESSIONS}", "kind": "apply_then_drop"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        Client(fake.url).post(SESSIONS, session_params(), key="replayed-key")
    assert client.control("GET", "/_fake/faults").json["pending"] == []
    # Nothing new was made, and the next replay is answered.
    retry = Client(fake.url).post(SESSIONS, session_params(), key="replayed-key")
    assert retry.status == 200 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json["id"] == first.json["id"]
    assert counters(client)["sessions_created"] == 1
    log = client.control("GET", "/_fake/requests").json["requests"]
    assert [(r["dropped"], r["replayed"]) for r in log] == [(False, False), (True, True), (False, True)]

    client.control("POST", "/_fake/faults", {"route": f"POST {SESSIONS}", "kind": "delay", "ms": 250})
    started = time.monotonic()
    slow = Client(fake.url).post(SESSIONS, session_params(), key="replayed-key")
    assert slow.status == 200 and slow.headers["Idempotent-Replayed"] == "true"
    assert time.monotonic() - started >= 0.25, "the delay fault did not delay the replay"
    assert client.control("GET", "/_fake/faults").json["pending"] == []


def test_omit_fields_fault_strips_the_answer_sent_not_the_one_stored(client, fake):
    client.control("POST", "/_fake/faults",
                   {"route": f"POST {SESSIONS}", "kind": "omit_fields", "fields": ["url"]})
    first = client.post(SESSIONS, session_params(), key="no-url")
    assert first.status == 200 and "url" not in first.json and first.json["id"], first
    retry = client.post(SESSIONS, session_params(), key="no-url")
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json["id"] == first.json["id"] and retry.json["url"], retry
    assert client.control("POST", "/_fake/faults", {"route": f"POST {SESSIONS}", "kind": "omit_fields"}).status == 400


def test_drop_fault_applies_nothing(client, fake):
    client.control("POST", "/_fake/faults", {"route": f"POST {SESSIONS}", "kind": "drop"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        client.post(SESSIONS, session_params(), key="never-arrived")
    retry = Client(fake.url).post(SESSIONS, session_params(), key="never-arrived")
    assert retry.status == 200 and "Idempotent-Replayed" not in retry.headers
    assert counters(client)["sessions_created"] == 1


def test_clearing_faults(client):
    client.control("POST", "/_fake/faults", {"route": f"GET {SESSIONS}", "kind": "status", "status": 500})
    assert len(client.control("GET", "/_fake/faults").json["pending"]) == 1
    client.control("DELETE", "/_fake/faults")
    assert client.get(SESSIONS).status == 200


# -- checkout flows ----------------------------------------------------------------

def test_complete_paid_session(client):
    session = create_session(client)
    done = client.control("POST", f"/_fake/sessions/{session['id']}/complete",
                          {"paid": True, "payment_method": "card"})
    assert done.status == 200
    fetched = client.get(f"{SESSIONS}/{session['id']}").json
    assert (fetched["status"], fetched["payment_status"]) == ("complete", "paid")
    assert fetched["customer_details"]["email"] == "jenny.rosen@example.com"
    assert fetched["customer_details"]["name"] == "Jenny Rosen"
    assert fetched["customer_details"]["address"]["line1"] == "510 Townsend St"
    intent = client.get(f"/v1/payment_intents/{fetched['payment_intent']}").json
    assert (intent["status"], intent["amount_received"], intent["amount"]) == ("succeeded", 1000, 1000)
    [event] = events(client, type="checkout.session.completed")
    assert event["data"]["object"]["id"] == session["id"]
    assert event["data"]["object"]["payment_status"] == "paid"
    again = client.control("POST", f"/_fake/sessions/{session['id']}/complete", {"paid": True})
    assert again.status == 409


def test_async_payment_succeeds_or_fails(client):
    good, bad = create_session(client), create_session(client)
    for session in (good, bad):
        client.control("POST", f"/_fake/sessions/{session['id']}/complete",
                       {"paid": False, "payment_method": "sepa_debit"})
    pending = client.get(f"{SESSIONS}/{good['id']}").json
    assert (pending["status"], pending["payment_status"]) == ("complete", "unpaid")
    assert client.get(f"/v1/payment_intents/{pending['payment_intent']}").json["status"] == "processing"

    assert client.control("POST", f"/_fake/sessions/{good['id']}/async_result",
                          {"succeeded": True}).status == 200
    assert client.control("POST", f"/_fake/sessions/{bad['id']}/async_result",
                          {"succeeded": False}).status == 200
    assert client.get(f"{SESSIONS}/{good['id']}").json["payment_status"] == "paid"
    assert client.get(f"{SESSIONS}/{bad['id']}").json["payment_status"] == "unpaid"
    assert [e["data"]["object"]["id"] for e in
            events(client, type="checkout.session.async_payment_succeeded")] == [good["id"]]
    assert [e["data"]["object"]["id"] for e in
            events(client, type="checkout.session.async_payment_failed")] == [bad["id"]]
    assert client.control("POST", f"/_fake/sessions/{good['id']}/async_result",
                          {"succeeded": True}).status == 409


def test_expire_through_the_api(client):
    session = create_session(client)
    expired = client.post(f"{SESSIONS}/{session['id']}/expire", key="expire-1")
    assert expired.status == 200 and expired.json["status"] == "expired"
    assert [e["data"]["object"]["id"] for e in events(client, type="checkout.session.expired")] \
        == [session["id"]]
    again = client.post(f"{SESSIONS}/{session['id']}/expire", key="expire-2")
    assert again.status == 400 and "status of `expired`" in again.json["error"]["message"]

    paid = paid_session(client)
    refused = client.post(f"{SESSIONS}/{paid['id']}/expire")
    assert refused.status == 400 and "status of `complete`" in refused.json["error"]["message"]
    assert client.post(f"{SESSIONS}/cs_test_nope/expire").status == 404


def test_expire_at_stripe_and_by_the_clock(client):
    by_hand = create_session(client)
    assert client.control("POST", f"/_fake/sessions/{by_hand['id']}/expire").json["status"] == "expired"
    soon = create_session(client, expires_at=int(time.time()) + 31 * 60)
    later = create_session(client)
    client.control("POST", "/_fake/clock", {"advance_seconds": 32 * 60})
    assert client.get(f"{SESSIONS}/{soon['id']}").json["status"] == "expired"
    assert client.get(f"{SESSIONS}/{later['id']}").json["status"] == "open"
    assert counters(client)["sessions_by_status"] == {"open": 1, "complete": 0, "expired": 2}
    assert client.control("POST", f"/_fake/sessions/{soon['id']}/complete").status == 409


def test_subscription_mode(client):
    client.control("POST", "/_fake/config", {"subscription_price_amount": 1500})
    session = create_session(client, mode="subscription",
                             line_items=[{"price": "price_monthly", "quantity": 2}],
                             subscription_data={"metadata": {"customer_ref": "c1"}})
    assert session["amount_total"] == 3000
    client.control("POST", f"/_fake/sessions/{session['id']}/complete", {"paid": True})
    done = client.get(f"{SESSIONS}/{session['id']}").json
    assert done["subscription"].startswith("sub_") and done["customer"].startswith("cus_")
    assert done["payment_intent"].startswith("pi_")
    [created] = events(client, type="customer.subscription.created")
    assert created["data"]["object"]["id"] == done["subscription"]
    assert created["data"]["object"]["metadata"] == {"customer_ref": "c1"}


def test_complete_with_no_payment_required(client):
    """A 100%-off code: complete, payment_status no_payment_required, amount_total 0 in the
    session, its line items and its event, no payment intent; a subscription is trialing."""
    session = create_session(client)
    done = client.control("POST", f"/_fake/sessions/{session['id']}/complete",
                          {"payment_status": "no_payment_required"})
    assert done.status == 200, done
    fetched = client.get(f"{SESSIONS}/{session['id']}").json
    assert (fetched["status"], fetched["payment_status"]) == ("complete", "no_payment_required")
    assert (fetched["amount_subtotal"], fetched["amount_total"]) == (1000, 0)
    assert fetched["total_details"]["amount_discount"] == 1000
    assert fetched["payment_intent"] is None
    [line] = client.get(f"{SESSIONS}/{session['id']}",
                        {"expand": ["line_items"]}).json["line_items"]["data"]
    assert (line["amount_subtotal"], line["amount_discount"], line["amount_total"]) == (1000, 1000, 0)
    [event] = events(client, type="checkout.session.completed")
    obj = event["data"]["object"]
    assert (obj["id"], obj["payment_status"], obj["amount_total"]) == (
        session["id"], "no_payment_required", 0)
    assert client.control("POST", f"/_fake/sessions/{session['id']}/complete",
                          {"payment_status": "no_payment_required"}).status == 409

    trial = create_session(client, mode="subscription",
                           line_items=[{"price": "price_monthly", "quantity": 1}])
    assert client.control("POST", f"/_fake/sessions/{trial['id']}/complete",
                          {"payment_status": "no_payment_required"}).status == 200
    done = client.get(f"{SESSIONS}/{trial['id']}").json
    assert (done["payment_status"], done["amount_total"], done["payment_intent"]) == (
        "no_payment_required", 0, None)
    [sub] = events(client, type="customer.subscription.created")
    assert sub["data"]["object"]["status"] == "trialing"

    # The older boolean still works and must agree with payment_status when both are given.
    other = create_session(client)
    assert client.control("POST", f"/_fake/sessions/{other['id']}/complete",
                          {"paid": True, "payment_status": "unpaid"}).status == 400
    assert client.control("POST", f"/_fake/sessions/{other['id']}/complete",
                          {"payment_status": "free"}).status == 400
    assert client.control("POST", f"/_fake/sessions/{other['id']}/complete",
                          {"payment_status": "unpaid"}).status == 200
    assert client.get(f"{SESSIONS}/{other['id']}").json["payment_status"] == "unpaid"


def test_clock_set_back_stamps_events_in_the_past(client):
    session = paid_session(client)
    now = client.control("GET", "/_fake/clock").json["now"]
    back = client.control("POST", "/_fake/clock", {"offset_seconds": -4 * 86400})
    assert back.status == 200 and back.json["offset_seconds"] == -4 * 86400
    assert abs(back.json["now"] - (now - 4 * 86400)) <= 2
    client.control("POST", "/_fake/refunds", {"payment_intent": session["payment_intent"], "amount": 100})
    assert client.control("POST", "/_fake/clock", {"offset_seconds": 0}).json["offset_seconds"] == 0
    old = events(client, types=["refund.created", "charge.refunded"])
    assert len(old) == 2 and all(e["created"] <= now - 4 * 86400 + 2 for e in old)
    assert events(client, types=["refund.created"], created={"gte": now - 3 * 86400}) == []
    assert client.control("POST", "/_fake/clock", {}).status == 400
    assert client.control("POST", "/_fake/clock", {"advance_seconds": 1, "offset_seconds": 1}).status == 400
    assert client.control("POST", "/_fake/clock", {"advance_seconds": -1}).status == 400


def test_list_sessions_filters_and_pages(client):
    made = [create_session(client) for _ in range(5)]
    client.control("POST", f"/_fake/sessions/{made[1]['id']}/complete")
    newest_first = [s["id"] for s in reversed(made)]
    page = client.get(SESSIONS, {"limit": 2}).json
    assert page["object"] == "list" and page["url"] == SESSIONS and page["has_more"] is True
    assert [s["id"] for s in page["data"]] == newest_first[:2]
    rest = client.get(SESSIONS, {"limit": 10, "starting_after": newest_first[1]}).json
    assert [s["id"] for s in rest["data"]] == newest_first[2:] and rest["has_more"] is False
    before = client.get(SESSIONS, {"limit": 2, "ending_before": newest_first[3]}).json
    assert [s["id"] for s in before["data"]] == newest_first[1:3]
    complete = client.get(SESSIONS, {"status": "complete"}).json["data"]
    assert [s["id"] for s in complete] == [made[1]["id"]]
    intent = complete[0]["payment_intent"]
    assert [s["id"] for s in client.get(SESSIONS, {"payment_intent": intent}).json["data"]] \
        == [made[1]["id"]]
    assert client.get(SESSIONS, {"starting_after": "cs_test_nope"}).status == 400


# -- refunds ---------------------------------------------------------------------

def test_refunds_never_exceed_what_was_paid(client):
    intent = paid_session(client)["payment_intent"]
    first = client.post("/v1/refunds", {"payment_intent": intent, "amount": 400,
                                        "reason": "requested_by_customer",
                                        "metadata": {"refund_id": "r1"}}, key="refund-r1")
    assert first.status == 200
    refund = first.json
    assert (refund["object"], refund["status"], refund["amount"]) == ("refund", "succeeded", 400)
    assert refund["metadata"] == {"refund_id": "r1"} and refund["id"].startswith("re_")
    assert client.get(f"/v1/refunds/{refund['id']}").json == refund

    too_much = client.post("/v1/refunds", {"payment_intent": intent, "amount": 700})
    assert too_much.status == 400 and too_much.json["error"]["param"] == "amount"
    rest = client.post("/v1/refunds", {"payment_intent": intent})  # all that remains
    assert rest.status == 200 and rest.json["amount"] == 600
    nothing_left = client.post("/v1/refunds", {"payment_intent": intent, "amount": 1})
    assert nothing_left.status == 400
    assert nothing_left.json["error"]["code"] == "charge_already_refunded"

    listed = client.get("/v1/refunds", {"payment_intent": intent}).json
    assert [r["amount"] for r in listed["data"]] == [600, 400]
    charge_events = events(client, type="charge.refunded")
    assert [e["data"]["object"]["amount_refunded"] for e in charge_events] == [1000, 400]
    assert charge_events[0]["data"]["object"]["refunded"] is True
    assert len(events(client, type="refund.created")) == 2
    [by_key] = [e for e in events(client, type="refund.created")
                if e["request"]["idempotency_key"] == "refund-r1"]
    assert by_key["data"]["object"]["id"] == refund["id"]


def test_refund_parameters(client):
    unpaid = create_session(client)
    client.control("POST", f"/_fake/sessions/{unpaid['id']}/complete", {"paid": False})
    intent = client.get(f"{SESSIONS}/{unpaid['id']}").json["payment_intent"]
    assert client.post("/v1/refunds", {"payment_intent": intent}).status == 400  # still processing
    assert client.post("/v1/refunds", {}).json["error"]["code"] == "parameter_missing"
    assert client.post("/v1/refunds", {"payment_intent": intent, "amount": 0}).status == 400
    assert client.post("/v1/refunds", {"payment_intent": intent, "reason": "bored"}).status == 400
    assert client.get("/v1/refunds/re_nope").status == 404


def test_pending_refund_resolved_later(client):
    intent = paid_session(client)["payment_intent"]
    client.control("POST", "/_fake/config", {"refund_status": "pending"})
    ok = client.post("/v1/refunds", {"payment_intent": intent, "amount": 300}).json
    failing = client.post("/v1/refunds", {"payment_intent": intent, "amount": 700}).json
    assert ok["status"] == failing["status"] == "pending"
    # Pending refunds count against what remains.
    assert client.post("/v1/refunds", {"payment_intent": intent, "amount": 1}).status == 400

    assert client.control("POST", f"/_fake/refunds/{ok['id']}/resolve",
                          {"status": "succeeded"}).json["status"] == "succeeded"
    failed = client.control("POST", f"/_fake/refunds/{failing['id']}/resolve",
                            {"status": "failed", "failure_reason": "expired_or_canceled_card"}).json
    assert (failed["status"], failed["failure_reason"]) == ("failed", "expired_or_canceled_card")
    assert [e["data"]["object"]["id"] for e in events(client, type="refund.failed")] == [failing["id"]]
    updated = events(client, type="refund.updated")
    assert [e["data"]["object"]["status"] for e in updated] == ["failed", "succeeded"]
    assert updated[0]["data"]["previous_attributes"] == {"status": "pending"}
    # The failed refund's money is refundable again.
    assert client.post("/v1/refunds", {"payment_intent": intent}).json["amount"] == 700
    assert client.control("POST", f"/_fake/refunds/{ok['id']}/resolve",
                          {"status": "failed"}).status == 409


def test_dashboard_refund(client):
    intent = paid_session(client)["payment_intent"]
    reply = client.control("POST", "/_fake/refunds", {"payment_intent": intent, "amount": 250})
    assert reply.status == 200
    refund = reply.json
    assert refund["metadata"] == {} and refund["amount"] == 250
    [created] = events(client, type="refund.created")
    assert created["data"]["object"]["id"] == refund["id"]
    assert created["request"] == {"id": None, "idempotency_key": None}
    [charged] = events(client, type="charge.refunded")
    assert charged["data"]["object"]["amount_refunded"] == 250
    assert client.control("POST", "/_fake/refunds", {"payment_intent": intent, "amount": 800}).status == 400
    assert counters(client)["refunds_created"] == 1


# -- events and webhooks -------------------------------------------------------------

def test_event_list_newest_first_with_filters(client):
    session = paid_session(client)
    other = create_session(client)
    client.post(f"{SESSIONS}/{other['id']}/expire")
    client.post("/v1/refunds", {"payment_intent": session["payment_intent"], "amount": 100})
    listed = client.get("/v1/events").json
    assert listed["url"] == "/v1/events"
    types = [e["type"] for e in listed["data"]]
    assert types == ["charge.refunded", "refund.created", "checkout.session.expired",
                     "checkout.session.completed"]
    created = [e["created"] for e in listed["data"]]
    assert created == sorted(created, reverse=True)
    event = listed["data"][0]
    assert event["object"] == "event" and event["id"].startswith("evt_")
    assert event["api_version"] == "2026-10-28.endive" and event["livemode"] is False
    assert [e["type"] for e in events(client, type="checkout.session.*")] == \
        ["checkout.session.expired", "checkout.session.completed"]
    assert [e["type"] for e in events(client, types=["refund.created", "charge.refunded"])] == \
        ["charge.refunded", "refund.created"]
    page = client.get("/v1/events", {"limit": 1, "starting_after": listed["data"][1]["id"]}).json
    assert [e["type"] for e in page["data"]] == ["checkout.session.expired"] and page["has_more"]
    assert len(events(client, created={"gte": created[-1]})) == 4
    assert events(client, created={"gt": created[0]}) == []
    assert client.get(f"/v1/events/{event['id']}").json == event


def test_webhook_delivery_signature_verifies(client):
    session = paid_session(client)
    [event] = events(client, type="checkout.session.completed")
    delivery = client.control("GET", f"/_fake/events/{event['id']}/delivery").json
    assert json.loads(delivery["payload"]) == event
    assert delivery["payload"] == client.get(f"/v1/events/{event['id']}").body.decode()
    fields = dict(part.split("=", 1) for part in delivery["signature"].split(","))
    assert abs(int(fields["t"]) - time.time()) < 5
    expected = hmac.new(WEBHOOK_SECRET.encode(), f"{fields['t']}.{delivery['payload']}".encode(),
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert json.loads(delivery["payload"])["data"]["object"]["id"] == session["id"]

    rotated = client.control(
        "GET", f"/_fake/events/{event['id']}/delivery?secret=whsec_next&timestamp=1700000000").json
    expected = hmac.new(b"whsec_next", f"1700000000.{rotated['payload']}".encode(),
                        hashlib.sha256).hexdigest()
    assert rotated["signature"] == f"t=1700000000,v1={expected}"


# -- looking inside ------------------------------------------------------------------

def test_counters_and_request_log(client):
    create_session(client, key="log-1")
    client.get(SESSIONS)
    client.post(SESSIONS, session_params(mode="rent"))
    c = counters(client)
    assert c["requests"] == {f"POST {SESSIONS}": 2, f"GET {SESSIONS}": 1}
    assert c["sessions_created"] == 1 and c["sessions_by_status"]["open"] == 1
    assert c["param_check_failures"] == 1
    assert c["param_check_failure_details"][0]["param"] == "mode"
    logged = client.control("GET", "/_fake/requests").json["requests"]
    assert [(r["method"], r["status"]) for r in logged] == [("POST", 200), ("GET", 200), ("POST", 400)]
    assert logged[0]["params"]["metadata"] == {"deal_id": "d1", "payment_id": "p1"}
    assert logged[0]["idempotency_key"] == "log-1"
    assert all("authorization" not in r["headers"] for r in logged)
    assert API_KEY not in json.dumps(logged)


def test_reset_forgets_everything(client):
    create_session(client, key="gone")
    client.control("POST", "/_fake/faults", {"route": f"GET {SESSIONS}", "kind": "status", "status": 500})
    client.control("POST", "/_fake/reset")
    assert client.get(SESSIONS).json["data"] == []
    c = counters(client)
    assert c["sessions_created"] == 0 and c["requests"] == {f"GET {SESSIONS}": 1}


def test_control_errors(client):
    assert client.control("POST", "/_fake/sessions/cs_nope/complete").status == 404
    assert client.control("POST", "/_fake/config", {"refund_status": "maybe"}).status == 400
    assert client.control("POST", "/_fake/faults", {"route": f"GET {SESSIONS}", "kind": "boom"}).status == 400
    assert client.control("GET", "/_fake/nothing").status == 404


def test_payment_page(client):
    session = create_session(client)
    page = client.request("GET", f"/pay/{session['id']}")
    assert page.status == 200 and b"Widget" in page.body
    paid = client.request("POST", f"/pay/{session['id']}", b"action=pay",
                          {"Content-Type": "application/x-www-form-urlencoded"})
    assert paid.status == 303
    assert paid.headers["Location"] == f"https://shop.example/ok?session={session['id']}"
    assert client.get(f"{SESSIONS}/{session['id']}").json["payment_status"] == "paid"


def test_command_line():
    process = subprocess.Popen([sys.executable, "-m", "fakestripe", "--port", "0", "--quiet",
                                "--api-key", "sk_test_cli"],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("fakestripe listening on http://127.0.0.1:")
        c = Client(line.rsplit(" ", 1)[1], api_key="sk_test_cli")
        assert c.get(SESSIONS).status == 200
        c.close()
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
