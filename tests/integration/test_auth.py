"""Who may call (protocol.md section 6): SO_PEERCRED, allow/admin groups,
the socket file's mode. The tests run as root; other callers are played by
a stdlib-only client run under setpriv as nobody (uid/gid 65534)."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

import paymentsd_harness as h
from paymentsd_harness import describe_status

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root to act as another user")


@pytest.fixture(autouse=True)
def _tools():
    if not shutil.which("setpriv"):
        pytest.fail("setpriv (util-linux) is needed for the authorisation tests")
    if not os.access(h.SYSTEM_PYTHON, os.X_OK):
        pytest.fail(f"{h.SYSTEM_PYTHON} is needed for the authorisation tests")


def start_reachable(start_daemon, env=None):
    """A daemon whose socket nobody can reach at the filesystem level, so a
    refusal can only come from the daemon's SO_PEERCRED check."""
    d = start_daemon(env=env)
    st = os.stat(d.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, (
        f"socket mode is {oct(stat.S_IMODE(st.st_mode))}, spec says 0660")
    os.chmod(d.workdir, 0o755)
    os.chown(d.socket_path, -1, h.NOBODY_GID)
    return d


def req(method, rid, payload=b"", **kw):
    return h.make_request(method, payload, request_id=rid, **kw)


def _expect(resp, code_name, reason, what):
    pb = h.pb()
    assert resp != "EOF", f"{what}: the server closed the connection instead of answering"
    got = (resp.status.code, resp.status.reason if code_name != "OK" else "")
    assert got == (pb.Code.Value(code_name), reason), (
        f"{what}: expected {code_name} {reason!r}, got {describe_status(resp.status)}")


def test_socket_mode_is_0660(daemon):
    st = os.stat(daemon.socket_path)
    assert stat.S_ISSOCK(st.st_mode), "PAYMENTSD_SOCKET is not a socket"
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(stat.S_IMODE(st.st_mode))


def test_nobody_without_allow_gids_is_refused(start_daemon, pb):
    d = start_reachable(start_daemon)
    out = h.call_as_user(d.socket_path, [
        req("Health", 1, pb.HealthRequest()),
        req("Reconcile", 2),
        req("NoSuchMethod", 3),        # authorisation comes before method lookup
        req("Health", 4, pb.HealthRequest()),  # connection stayed open
    ])
    assert len(out) == 4, out
    for resp, rid, what in zip(out, (1, 2, 3, 4),
                               ("Health", "Reconcile", "unknown method", "2nd Health")):
        _expect(resp, "PERMISSION_DENIED", "caller_not_allowed", f"nobody {what}")
        assert resp.request_id == rid
    # root is still served.
    assert d.health().status == pb.SERVING_STATUS_SERVING


@pytest.mark.parametrize("allow", ["65534", "nogroup", "0,nogroup"])
def test_allowed_group_may_call_but_not_admin(start_daemon, pb, allow):
    d = start_reachable(start_daemon, env={"PAYMENTSD_ALLOW_GIDS": allow})
    out = h.call_as_user(d.socket_path, [
        req("Health", 1, pb.HealthRequest()),
        req("Reconcile", 2, pb.ReconcileRequest()),
        req("SetStock", 3, pb.StockUpdate(sku="a", on_hand=1)),
        req("GetStock", 4, pb.StockRef(sku="a")),
        req("Metrics", 5, pb.MetricsRequest()),
    ])
    assert len(out) == 5, out
    _expect(out[0], "OK", "", f"nobody Health with ALLOW_GIDS={allow}")
    reply = pb.HealthReply.FromString(out[0].payload)
    assert reply.status == pb.SERVING_STATUS_SERVING
    _expect(out[1], "PERMISSION_DENIED", "caller_not_allowed",
            f"nobody Reconcile (admin) with only ALLOW_GIDS={allow}")
    _expect(out[2], "PERMISSION_DENIED", "caller_not_allowed",
            f"nobody SetStock (admin) with only ALLOW_GIDS={allow}")
    _expect(out[3], "NOT_FOUND", "sku_not_found",
            "nobody GetStock (not admin: served, and the sku is unknown)")
    _expect(out[4], "OK", "", "nobody Metrics")


def test_admin_group_may_call_admin_methods(start_daemon, pb):
    d = start_reachable(start_daemon, env={"PAYMENTSD_ALLOW_GIDS": "nogroup",
                                           "PAYMENTSD_ADMIN_GIDS": "65534"})
    out = h.call_as_user(d.socket_path, [
        req("Reconcile", 1, pb.ReconcileRequest()),
        req("AdjustStock", 2, pb.StockAdjustment(sku="a", delta=1)),
    ])
    _expect(out[0], "OK", "", "admin-group Reconcile")
    _expect(out[1], "NOT_FOUND", "sku_not_found", "admin-group AdjustStock (served; the sku is unknown)")


def test_an_admin_group_alone_does_not_make_an_allowed_caller(start_daemon, pb):
    """Section 6: admin methods need an admin group *additionally*; a caller in PAYMENTSD_ADMIN_GIDS
    but not in PAYMENTSD_ALLOW_GIDS may call nothing."""
    d = start_reachable(start_daemon, env={"PAYMENTSD_ALLOW_GIDS": "0",
                                           "PAYMENTSD_ADMIN_GIDS": "65534"})
    out = h.call_as_user(d.socket_path, [
        req("Health", 1, pb.HealthRequest()),
        req("Reconcile", 2, pb.ReconcileRequest()),
    ])
    _expect(out[0], "PERMISSION_DENIED", "caller_not_allowed", "admin group only: Health")
    _expect(out[1], "PERMISSION_DENIED", "caller_not_allowed", "admin group only: Reconcile")


def test_other_group_does_not_help(start_daemon, pb):
    """Groups the caller is not in grant nothing."""
    d = start_reachable(start_daemon, env={"PAYMENTSD_ALLOW_GIDS": "0",
                                           "PAYMENTSD_ADMIN_GIDS": "0"})
    out = h.call_as_user(d.socket_path, [req("Health", 1, pb.HealthRequest())])
    _expect(out[0], "PERMISSION_DENIED", "caller_not_allowed",
            "nobody with ALLOW_GIDS=0 (root's group only)")


def test_root_may_call_admin_methods(client, pb):
    """Root passes authorisation for every admin method: the answer comes from
    the method itself (not built yet, or its own validation of the empty request)."""
    expected = {"Reconcile": "", "RefundPayment": "invalid_field",
                "ReleaseClaim": "invalid_field", "SetStock": "invalid_field", "AdjustStock": "invalid_field"}
    for method, reason in expected.items():
        status, _ = client.call(method, b"", idempotency_key="k1")
        assert status.reason == reason, (
            f"root {method}: expected {reason}, got {describe_status(status)}")
