"""The wire protocol: framing, envelope, bad input, pipelining, deadlines,
Health and Metrics (protocol.md sections 1-4)."""

from __future__ import annotations

import time

import pytest

import paymentsd_harness as h
from paymentsd_harness import describe_status, status_details

IMPLEMENTED = {"Health", "Metrics", "CreateCheckout", "GetPayment", "ListPayments", "ListEvents",
               "SetStock", "AdjustStock", "GetStock", "HandleStripeEvent", "ConfirmCheckout", "CancelCheckout",
               "Reconcile", "RefundPayment", "GetClaim", "ReleaseClaim"}


def _expect(status, code_name: str, reason: str, what: str = ""):
    pb = h.pb()
    assert status.code == pb.Code.Value(code_name) and status.reason == reason, (
        f"{what}: expected {code_name} {reason!r}, got {describe_status(status)}")


def _assert_open(client: h.Client, what: str):
    """The connection still works: a Health call on it answers OK."""
    pb = h.pb()
    try:
        status, _ = client.call("Health", pb.HealthRequest(), timeout=5)
    except (h.ConnectionClosed, OSError) as e:
        raise AssertionError(f"connection was closed after {what} ({e}); "
                             f"it must stay open") from None
    assert status.code == pb.OK, f"Health after {what}: {describe_status(status)}"


# ---------------------------------------------------------------------------
# Health and Metrics
# ---------------------------------------------------------------------------


def test_health_reply(client, pb):
    status, payload = client.call("Health", pb.HealthRequest(), request_id=42)
    assert status.code == pb.OK, describe_status(status)
    reply = pb.HealthReply.FromString(payload)
    assert reply.status == pb.SERVING_STATUS_SERVING, reply
    assert reply.version.strip(), f"HealthReply.version is empty: {reply}"
    assert reply.uptime_s < 60, f"fresh daemon reports uptime {reply.uptime_s} s"
    assert reply.pending_operations == 0, (
        f"fresh database, yet pending_operations={reply.pending_operations}")


def test_health_uptime_advances(client, pb):
    first = client.call_ok("Health", pb.HealthRequest())
    time.sleep(2.2)
    second = client.call_ok("Health", pb.HealthRequest())
    assert second.uptime_s >= first.uptime_s + 1, (
        f"uptime went from {first.uptime_s} to {second.uptime_s} over 2.2 s")


def test_request_id_is_echoed_including_max_uint64(client, pb):
    for rid in (1, 7, 2**32, 2**63, 2**64 - 1):
        resp_status, _ = client.call("Health", pb.HealthRequest(), request_id=rid)
        assert resp_status.code == pb.OK, f"id {rid}: {describe_status(resp_status)}"


def test_unknown_fields_are_ignored(client, pb):
    """Forward compatibility: unknown fields in the envelope and in the
    payload are skipped, as protobuf requires."""
    unknown = b"\xf8\x06\x01" + b"\x82\x07\x03abc"   # field 111 varint, field 112 bytes
    req = client.request("Health", pb.HealthRequest().SerializeToString() + unknown)
    client.send_frame(req.SerializeToString() + unknown)
    resp = client.recv_response(req.request_id)
    assert resp.status.code == pb.OK, describe_status(resp.status)


def test_request_headers_are_accepted(client, pb):
    status, _ = client.call("Health", pb.HealthRequest(),
                            headers=[("trace-id", "abc123"), ("x", "")])
    assert status.code == pb.OK, describe_status(status)


def _prom(text):
    return h.parse_prometheus(text)


def _health_ok_count(samples) -> float:
    found = h.find_samples(samples, "paymentsd_requests_total",
                           method="Health", code="OK")
    assert len(found) == 1, (
        f'expected one paymentsd_requests_total{{method="Health",code="OK"}} '
        f"series, found {found}")
    return found[0][2]


def test_metrics_counts_health_calls(client, pb):
    for _ in range(5):
        client.call_ok("Health", pb.HealthRequest())
    text = client.call_ok("Metrics", pb.MetricsRequest()).text
    samples, _ = _prom(text)
    before = _health_ok_count(samples)
    assert before >= 5, f"Health OK counter is {before} after 5 calls:\n{text}"

    for _ in range(7):
        client.call_ok("Health", pb.HealthRequest())
    samples, _ = _prom(client.call_ok("Metrics", pb.MetricsRequest()).text)
    after = _health_ok_count(samples)
    assert after - before == 7, (
        f"Health OK counter went {before} -> {after} over 7 calls")


def test_metrics_duration_histogram(client, pb):
    for _ in range(3):
        client.call_ok("Health", pb.HealthRequest())
    text = client.call_ok("Metrics", pb.MetricsRequest()).text
    samples, types = _prom(text)
    fam = "paymentsd_request_duration_seconds"
    assert types.get(fam) == "histogram", (
        f"expected '# TYPE {fam} histogram', types seen: {types}")
    assert types.get("paymentsd_requests_total") == "counter", types

    buckets = h.find_samples(samples, fam + "_bucket", method="Health")
    assert buckets, f"no {fam}_bucket{{method=\"Health\"}} samples:\n{text}"
    # Group the series by their labels other than le.
    groups: dict[tuple, list] = {}
    for _, labels, value in buckets:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        assert "le" in labels, f"bucket without le: {labels}"
        groups.setdefault(key, []).append((labels["le"], value))
    total = 0.0
    for key, series in groups.items():
        series.sort(key=lambda lv: float(lv[0]))
        assert series[-1][0] == "+Inf", f"{key}: no le=\"+Inf\" bucket: {series}"
        values = [v for _, v in series]
        assert values == sorted(values), f"{key}: buckets not cumulative: {series}"
        labels = dict(key)
        count = h.find_samples(samples, fam + "_count", **labels)
        ssum = h.find_samples(samples, fam + "_sum", **labels)
        assert len(count) == 1 and len(ssum) == 1, (
            f"{key}: expected one _count and one _sum, got {count} {ssum}")
        assert count[0][2] == values[-1], (
            f"{key}: _count {count[0][2]} != +Inf bucket {values[-1]}")
        assert ssum[0][2] >= 0
        total += count[0][2]
    assert total >= 3, f"Health histogram counts {total} calls, made >= 3"


def test_metrics_text_is_valid_exposition(client, pb):
    text = client.call_ok("Metrics", pb.MetricsRequest()).text
    assert text.endswith("\n"), "exposition text must end with a newline"
    _prom(text)  # asserts every line parses


# ---------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------


def test_service_in_proto_has_the_expected_methods(pb):
    assert set(h.service_methods()) >= IMPLEMENTED | {"CreateCheckout", "Reconcile"}


def test_every_method_is_served(client, pb):
    """This build serves every method of the service: none answers UNIMPLEMENTED
    (an empty request gets the method's own answer), and the connection stays open."""
    methods = sorted(set(h.service_methods()))
    assert set(methods) == IMPLEMENTED, f"proto and served methods differ: {set(methods) ^ IMPLEMENTED}"
    wrong = []
    for method in methods:
        # A valid key: RefundPayment requires one; harmless for the others.
        status, _ = client.call(method, b"", idempotency_key=f"key-{method}")
        if status.code == pb.UNIMPLEMENTED:
            wrong.append(f"{method}: {describe_status(status)}")
    assert not wrong, "methods not served:\n" + "\n".join(wrong)
    _assert_open(client, "every method called")


@pytest.mark.parametrize("method", [
    "payments.v1.Payments/NoSuchMethod",
    "payments.v1.Payments/health",          # case matters
    "payments.v1.Payments/Health/",
    "payments.v1.Payments/",
    "payments.v1.Other/Health",
    "Health",
    "/payments.v1.Payments/Health",
    "",
])
def test_unknown_method(client, pb, method):
    status, _ = client.call(method, b"", raw_method=True)
    _expect(status, "UNIMPLEMENTED", "unknown_method", repr(method))
    _assert_open(client, f"unknown method {method!r}")


# ---------------------------------------------------------------------------
# Bad input (protocol.md section 3)
# ---------------------------------------------------------------------------


def test_empty_frame(client, pb):
    client.send_bytes(h.header(0))
    resp = client.recv_frame()
    assert resp.request_id == 0, f"request_id {resp.request_id}, expected 0"
    _expect(resp.status, "INVALID_ARGUMENT", "empty_frame", "length 0")
    client.expect_closed()


def test_empty_frame_after_good_requests(client, pb):
    """Requests before the bad frame are answered normally."""
    status, _ = client.call("Health", pb.HealthRequest())
    assert status.code == pb.OK
    client.send_bytes(h.header(0))
    resp = client.recv_frame()
    assert resp.request_id == 0
    _expect(resp.status, "INVALID_ARGUMENT", "empty_frame", "length 0")
    client.expect_closed()


def test_oversize_frame_answered_before_body(client, pb):
    """Only the 4-byte header of a 2 MiB frame is sent: the server must
    answer from the header alone, without waiting for (or reading) a body."""
    client.send_bytes(h.header(2 * 1024 * 1024))
    t0 = time.monotonic()
    try:
        resp = client.recv_frame(timeout=5)
    except TimeoutError:
        raise AssertionError(
            "no answer within 5 s to a 2 MiB frame header: the server seems "
            "to wait for the body instead of rejecting the length") from None
    assert resp.request_id == 0, f"request_id {resp.request_id}, expected 0"
    _expect(resp.status, "RESOURCE_EXHAUSTED", "frame_too_large", "2 MiB header")
    assert time.monotonic() - t0 < 5
    client.expect_closed()


@pytest.mark.parametrize("length", [h.DEFAULT_MAX_FRAME + 1, 0xFFFFFFFF])
def test_oversize_lengths(client, pb, length):
    client.send_bytes(h.header(length))
    resp = client.recv_frame(timeout=5)
    assert resp.request_id == 0
    _expect(resp.status, "RESOURCE_EXHAUSTED", "frame_too_large", f"length {length}")
    client.expect_closed()


def _padded_health(pb, size: int, request_id: int = 9):
    """A Health Request whose encoding is exactly size bytes (padded with a
    header)."""
    req = h.make_request("Health", pb.HealthRequest(), request_id=request_id)
    hdr = req.headers.add(key="pad", value="")
    base = len(req.SerializeToString())
    # Grow the value until the size is right (the length prefix of the value
    # grows with it, so iterate).
    n = size - base
    while True:
        hdr.value = "x" * max(n, 0)
        cur = len(req.SerializeToString())
        if cur == size:
            return req
        n += size - cur
        assert n >= 0, f"cannot pad a Health request to {size} bytes"


def test_frame_of_exactly_max_frame_is_accepted(client, pb):
    req = _padded_health(pb, h.DEFAULT_MAX_FRAME)
    body = req.SerializeToString()
    assert len(body) == h.DEFAULT_MAX_FRAME
    client.send_frame(body)
    resp = client.recv_response(req.request_id, timeout=15)
    assert resp.status.code == pb.OK, describe_status(resp.status)


def test_max_frame_setting(start_daemon, pb):
    """PAYMENTSD_MAX_FRAME=1024: 1024 bytes pass, 1025 are refused."""
    d = start_daemon(env={"PAYMENTSD_MAX_FRAME": "1024"})
    c = d.client()
    req = _padded_health(pb, 1024, request_id=5)
    c.send_frame(req.SerializeToString())
    resp = c.recv_response(5)
    assert resp.status.code == pb.OK, f"1024-byte frame: {describe_status(resp.status)}"

    big = _padded_health(pb, 1025, request_id=6)
    c.send_frame(big.SerializeToString())
    resp = c.recv_frame(timeout=5)
    assert resp.request_id == 0
    _expect(resp.status, "RESOURCE_EXHAUSTED", "frame_too_large", "1025-byte frame")
    c.expect_closed()


@pytest.mark.parametrize("body", [
    b"\xff\xff\xff",                          # truncated tag varint
    b"\x12\x05ab",                            # length-delimited field overruns
    b"\x08" + b"\x80" * 10 + b"\x01",         # varint longer than 10 bytes
    b"\x0a\x03\x08\x01",                      # (field 1 bytes) truncated
])
def test_malformed_envelope(client, pb, body):
    with pytest.raises(Exception):
        pb.Request.FromString(body)  # sanity: really not a Request
    client.send_frame(body)
    resp = client.recv_frame()
    assert resp.request_id == 0, f"request_id {resp.request_id}, expected 0"
    _expect(resp.status, "INVALID_ARGUMENT", "malformed_envelope", repr(body))
    client.expect_closed()


@pytest.mark.parametrize("delay_ms", [0, 500])
@pytest.mark.parametrize("tail", ["half_frame", "half_header", "clean_eof"])
def test_eof_mid_frame_answers_complete_requests(start_daemon, pb, delay_ms, tail):
    """3 complete Health requests, then (part of) a frame and EOF: exactly 3
    answers, then the server closes. With a delay the requests are still in
    flight when the EOF arrives."""
    env = {"PAYMENTSD_TEST_DELAY_MS": str(delay_ms)} if delay_ms else {}
    d = start_daemon(env=env)
    c = d.client()
    reqs = [c.request("Health", pb.HealthRequest()) for _ in range(3)]
    data = b"".join(h.encode_request(r) for r in reqs)
    extra = h.encode_request(c.request("Health", pb.HealthRequest()))
    if tail == "half_frame":
        data += extra[: len(extra) // 2]
    elif tail == "half_header":
        data += extra[:2]
    c.send_bytes(data)
    c.shutdown_write()
    got = c.read_responses([r.request_id for r in reqs], timeout=10)
    for rid, resp in got.items():
        assert resp.status.code == pb.OK, f"id {rid}: {describe_status(resp.status)}"
    c.expect_closed()


def test_malformed_payload(client, pb):
    status, _ = client.call("Health", b"\xff\xff\xff")
    _expect(status, "INVALID_ARGUMENT", "malformed_payload", "Health payload ff ff ff")
    _assert_open(client, "malformed payload")


def test_malformed_payload_metrics(client, pb):
    status, _ = client.call("Metrics", b"\x0a\x05ab")
    _expect(status, "INVALID_ARGUMENT", "malformed_payload", "Metrics payload")
    _assert_open(client, "malformed payload")


@pytest.mark.parametrize("key", [
    "a" * 256,
    "a\nb",
    "tab\there",
    "del\x7f",
    "caf\u00e9",
])
def test_invalid_idempotency_key(client, pb, key):
    status, _ = client.call("Health", pb.HealthRequest(), idempotency_key=key,
                            request_id=77)
    _expect(status, "INVALID_ARGUMENT", "invalid_field", f"idempotency_key {key[:20]!r}")
    details = status_details(status)
    assert details.get("field") == "idempotency_key", (
        f"details must name the field: got {details}")
    _assert_open(client, "invalid idempotency key")


@pytest.mark.parametrize("method,key", [
    ("payments.v1.Payments/Health\x00junk", ""),  # must not call Health cut at the NUL
    ("payments.v1.Payments/Health", "nul\x00"),
    ("payments.v1.Payments/Health", "\x00"),
    ("payments.v1.Payments/Health", "abc\x00\n"),
])
def test_nul_in_an_envelope_string_is_a_malformed_envelope(client, pb, method, key):
    """protobuf-c hands strings to C cut at the first NUL, so "k\0a" and
    "k\0b" would become one idempotency key; such envelopes are refused whole."""
    req = pb.Request(request_id=5, method=method, payload=b"", idempotency_key=key)
    client.send_frame(req.SerializeToString())
    resp = client.recv_frame()
    assert resp.request_id == 0, f"request_id {resp.request_id}, expected 0"
    _expect(resp.status, "INVALID_ARGUMENT", "malformed_envelope", repr((method, key)))
    client.expect_closed()


@pytest.mark.parametrize("key", ["a" * 255, "k", "~!#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}"])
def test_valid_idempotency_key_is_accepted(client, pb, key):
    status, _ = client.call("Health", pb.HealthRequest(), idempotency_key=key)
    assert status.code == pb.OK, f"key {key[:20]!r}: {describe_status(status)}"


def test_errors_keep_request_id(client, pb):
    """Per-request errors echo the request's id (only connection-level errors
    use 0)."""
    cases = [
        client.request("NoSuch", b""),
        client.request("Health", b"\xff\xff\xff"),
        client.request("Health", b"", idempotency_key="x" * 300),
        client.request("RefundPayment", b""),
    ]
    got = client.pipeline(cases)
    for r in cases:
        assert got[r.request_id].status.code != pb.OK


# ---------------------------------------------------------------------------
# Pipelining
# ---------------------------------------------------------------------------


def test_pipelining_200(client, pb):
    reqs = [client.request("Health", pb.HealthRequest()) for _ in range(200)]
    got = client.pipeline(reqs, timeout=30)
    assert len(got) == 200
    bad = [f"{rid}: {describe_status(r.status)}" for rid, r in got.items()
           if r.status.code != pb.OK]
    assert not bad, bad[:10]
    # Nothing more arrives.
    with pytest.raises(TimeoutError):
        client.recv_frame(timeout=0.5)


def test_pipelining_mixed_outcomes(client, pb):
    """Pipelined requests of different kinds each get their own answer."""
    kinds = []
    for i in range(60):
        k = i % 4
        if k == 0:
            kinds.append((client.request("Health", pb.HealthRequest()), "OK", ""))
        elif k == 1:
            kinds.append((client.request("Nope", b""), "UNIMPLEMENTED", "unknown_method"))
        elif k == 2:
            kinds.append((client.request("Health", b"\xff\xff\xff"),
                          "INVALID_ARGUMENT", "malformed_payload"))
        else:
            kinds.append((client.request("Metrics", pb.MetricsRequest()), "OK", ""))
    got = client.pipeline([r for r, _, _ in kinds], timeout=30)
    for req, code, reason in kinds:
        resp = got[req.request_id]
        _expect(resp.status, code, reason, f"id {req.request_id} ({req.method})")


def test_pipelining_1000_reader_after_writer(daemon, pb):
    """1000 requests are written completely before anything is read. The
    server bounds its in-flight work by pausing reads (default 128), never
    by dropping: all 1000 get exactly one answer."""
    # A big send buffer so that writing all 1000 never depends on the server
    # reading (they are ~40 KB in total).
    c = daemon.client(sndbuf=1 << 20)
    reqs = [c.request("Health", pb.HealthRequest()) for _ in range(1000)]
    data = b"".join(h.encode_request(r) for r in reqs)
    try:
        c.send_bytes(data, timeout=20)
    except TimeoutError:
        raise AssertionError("could not write 1000 requests within 20 s") from None
    got = c.read_responses([r.request_id for r in reqs], timeout=60)
    bad = [rid for rid, r in got.items() if r.status.code != pb.OK]
    assert not bad, f"{len(bad)} not OK, e.g. {describe_status(got[bad[0]].status)}"
    with pytest.raises(TimeoutError):
        c.recv_frame(timeout=0.5)


def test_pipelining_many_connections(daemon, pb):
    """20 connections x 25 pipelined requests, interleaved writes."""
    clients = [daemon.client() for _ in range(20)]
    batches = []
    for c in clients:
        batches.append([c.request("Health", pb.HealthRequest()) for _ in range(25)])
    for c, reqs in zip(clients, batches):
        c.send_bytes(b"".join(h.encode_request(r) for r in reqs))
    for c, reqs in zip(clients, batches):
        got = c.read_responses([r.request_id for r in reqs], timeout=30)
        assert all(r.status.code == pb.OK for r in got.values())


def test_pipelined_calls_run_concurrently(start_daemon, pb):
    """10 pipelined calls with a 1 s handler delay finish in far less than
    10 s: calls of one connection are not serialised."""
    d = start_daemon(env={"PAYMENTSD_TEST_DELAY_MS": "1000"})
    c = d.client()
    reqs = [c.request("Health", pb.HealthRequest()) for _ in range(10)]
    t0 = time.monotonic()
    got = c.pipeline(reqs, timeout=15)
    elapsed = time.monotonic() - t0
    assert all(r.status.code == pb.OK for r in got.values())
    assert 0.9 <= elapsed < 4.0, (
        f"10 pipelined 1 s calls took {elapsed:.2f} s (serial would be 10 s)")


def test_in_flight_bound_pauses_reads(start_daemon, pb):
    """With a 1 s handler delay and 300 pipelined requests, no more than 128
    run at once: the 129th answer comes about one delay after the first.
    All 300 are answered (reads paused, nothing dropped)."""
    d = start_daemon(env={"PAYMENTSD_TEST_DELAY_MS": "1000"})
    c = d.client(sndbuf=1 << 20)
    reqs = [c.request("Health", pb.HealthRequest()) for _ in range(300)]
    c.send_bytes(b"".join(h.encode_request(r) for r in reqs))
    arrivals = []
    seen = set()
    deadline = time.monotonic() + 30
    while len(seen) < 300:
        resp = c.recv_frame(timeout=max(0.01, deadline - time.monotonic()))
        assert resp.request_id not in seen, f"id {resp.request_id} answered twice"
        assert resp.status.code == pb.OK, describe_status(resp.status)
        seen.add(resp.request_id)
        arrivals.append(time.monotonic())
    assert seen == {r.request_id for r in reqs}
    gap = arrivals[128] - arrivals[0]
    assert gap >= 0.5, (
        f"the 129th answer came {gap:.2f} s after the first: more than 128 "
        f"requests were in flight at once on one connection")


# ---------------------------------------------------------------------------
# Deadlines
# ---------------------------------------------------------------------------


@pytest.fixture
def slow_daemon(start_daemon):
    return start_daemon(env={"PAYMENTSD_TEST_DELAY_MS": "2000"})


def test_deadline_exceeded(slow_daemon, pb):
    c = slow_daemon.client()
    t0 = time.monotonic()
    status, _ = c.call("Health", pb.HealthRequest(), timeout_ms=100, timeout=5)
    elapsed = time.monotonic() - t0
    _expect(status, "DEADLINE_EXCEEDED", "deadline_exceeded", "timeout_ms=100")
    assert elapsed < 1.0, (
        f"DEADLINE_EXCEEDED came after {elapsed:.2f} s; the deadline was 0.1 s")
    _assert_open(c, "a deadline_exceeded answer")


def test_default_deadline_lets_slow_call_finish(slow_daemon, pb):
    c = slow_daemon.client()
    t0 = time.monotonic()
    status, _ = c.call("Health", pb.HealthRequest(), timeout_ms=0, timeout=15)
    elapsed = time.monotonic() - t0
    assert status.code == pb.OK, describe_status(status)
    assert 1.9 <= elapsed < 10, f"call took {elapsed:.2f} s with a 2 s delay"


def test_generous_deadline_lets_slow_call_finish(slow_daemon, pb):
    c = slow_daemon.client()
    status, _ = c.call("Health", pb.HealthRequest(), timeout_ms=5000, timeout=15)
    assert status.code == pb.OK, describe_status(status)


def test_deadline_does_not_block_pipelined_neighbours(slow_daemon, pb):
    """A short-deadline call answers early even while a long one, sent
    first on the same connection, is still running."""
    c = slow_daemon.client()
    slow = c.request("Health", pb.HealthRequest())
    fast = c.request("Health", pb.HealthRequest(), timeout_ms=200)
    c.send_bytes(h.encode_request(slow) + h.encode_request(fast))
    t0 = time.monotonic()
    first = c.recv_frame(timeout=10)
    elapsed = time.monotonic() - t0
    assert first.request_id == fast.request_id, (
        f"expected the short-deadline call to be answered first, got id "
        f"{first.request_id} ({describe_status(first.status)})")
    _expect(first.status, "DEADLINE_EXCEEDED", "deadline_exceeded", "timeout_ms=200")
    assert elapsed < 1.5, f"answered after {elapsed:.2f} s"
    second = c.recv_response(slow.request_id, timeout=10)
    assert second.status.code == pb.OK, describe_status(second.status)
