"""The listening socket: stale files, a second daemon on a live path."""

from __future__ import annotations

import os
import socket
import stat

import paymentsd_harness as h


def test_stale_socket_is_replaced(make_daemon, pb):
    d = make_daemon()
    # A socket file nobody listens on: bound, then closed without unlink.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(d.socket_path)
    s.close()
    assert stat.S_ISSOCK(os.stat(d.socket_path).st_mode)
    assert h.connect_quietly(d.socket_path) is None, "stale socket should refuse"
    d.start()
    assert d.health().status == pb.SERVING_STATUS_SERVING
    assert stat.S_IMODE(os.stat(d.socket_path).st_mode) == 0o660


def test_second_daemon_on_live_socket_refuses(start_daemon, make_daemon, pb):
    first = start_daemon(name="first")
    inode = os.stat(first.socket_path).st_ino
    # Own database, same socket: the refusal must come from the socket.
    second = make_daemon(name="second", env={
        "PAYMENTSD_SOCKET": first.socket_path,
        "PAYMENTSD_DB": os.path.join(first.workdir, "second.db")},
        workdir=first.workdir)
    res = second.run_to_exit(timeout=20)
    assert res.returncode != 0, (
        f"second daemon on a live socket exited with status 0; stderr:\n{res.stderr}")
    assert first.socket_path in res.stderr, (
        f"the second daemon's stderr does not name {first.socket_path}:\n{res.stderr}")
    assert os.stat(first.socket_path).st_ino == inode, (
        "the second daemon replaced the first daemon's socket file")
    assert first.alive()
    # The first keeps answering, on new and existing connections.
    assert first.health().status == pb.SERVING_STATUS_SERVING
    c = first.client()
    assert c.call_ok("Health", pb.HealthRequest()).status == pb.SERVING_STATUS_SERVING


def test_socket_file_mode(daemon):
    st = os.stat(daemon.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(stat.S_IMODE(st.st_mode))


def test_many_connections_open_and_close(daemon, pb):
    """Connections that come and go (some without a word) leave the daemon
    serving."""
    for i in range(300):
        c = h.Client(daemon.socket_path)
        if i % 3 == 0:
            c.call("Health", pb.HealthRequest())
        elif i % 3 == 1:
            c.send_bytes(h.header(10)[:2])
        c.close()
    assert daemon.health().status == pb.SERVING_STATUS_SERVING
