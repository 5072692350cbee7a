"""It defends itself at start-up (guarantee 14, protocol.md section 7): one daemon per database,
and paths it cannot use are start-up errors with one line naming the variable and the path and
an exit status the unit does not restart on, never a loop of exit 1."""

from __future__ import annotations

import os
import subprocess

import pytest

import paymentsd_harness as h

EX_CONFIG = 78
EX_DATABASE_IN_USE = 75


def _one_line(res, status: int, variable: str, path: str):
    lines = res.stderr.splitlines()
    assert res.returncode == status, f"expected exit status {status}, got {res.returncode}; stderr:\n{res.stderr}"
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{res.stderr}"
    assert variable in lines[0] and path in lines[0], f"the line names neither {variable} nor {path}: {lines[0]!r}"
    assert h.LOG_PREFIX_RE.match(lines[0]), f"no syslog <N> prefix: {lines[0]!r}"


def test_a_second_daemon_on_the_same_database_is_refused_and_the_first_keeps_serving(start_daemon, make_daemon):
    first = start_daemon()
    second_dir = h.make_tmpdir()
    second = make_daemon(env={"PAYMENTSD_DB": first.db_path,
                              "PAYMENTSD_SOCKET": os.path.join(second_dir, "p.sock")}, workdir=second_dir)
    res = second.run_to_exit(timeout=20)
    _one_line(res, EX_DATABASE_IN_USE, "PAYMENTSD_DB", first.db_path)
    assert not os.path.exists(os.path.join(second_dir, "p.sock")), "the refused daemon bound its socket"
    assert first.health().status == h.pb().SERVING_STATUS_SERVING, "the first daemon stopped serving"
    first.stop()
    # Once the first is gone, the database can be served again.
    again = start_daemon(env={"PAYMENTSD_DB": first.db_path,
                              "PAYMENTSD_SOCKET": os.path.join(second_dir, "q.sock")}, workdir=second_dir)
    assert again.health().status == h.pb().SERVING_STATUS_SERVING


def test_a_database_directory_that_does_not_exist_is_a_start_up_error(make_daemon):
    workdir = h.make_tmpdir()
    path = os.path.join(workdir, "missing", "payments.db")
    res = make_daemon(env={"PAYMENTSD_DB": path}, workdir=workdir).run_to_exit(timeout=20)
    _one_line(res, EX_CONFIG, "PAYMENTSD_DB", os.path.join(workdir, "missing"))


def test_a_file_that_is_not_sqlite_is_a_start_up_error(make_daemon):
    workdir = h.make_tmpdir()
    path = os.path.join(workdir, "payments.db")
    with open(path, "wb") as f:
        f.write(b"this is not a database, it is a shopping list\n" * 200)
    res = make_daemon(env={"PAYMENTSD_DB": path}, workdir=workdir).run_to_exit(timeout=20)
    _one_line(res, EX_CONFIG, "PAYMENTSD_DB", path)
    with open(path, "rb") as f:
        assert f.read(14) == b"this is not a ", "the file was changed"


def test_a_socket_directory_that_does_not_exist_is_a_start_up_error(make_daemon):
    workdir = h.make_tmpdir()
    socket = os.path.join(workdir, "no-such-dir", "p.sock")
    res = make_daemon(env={"PAYMENTSD_SOCKET": socket}, workdir=workdir).run_to_exit(timeout=20)
    _one_line(res, EX_CONFIG, "PAYMENTSD_SOCKET", os.path.join(workdir, "no-such-dir"))


def test_the_socket_path_limit_is_the_real_one(make_daemon, start_daemon):
    """Linux's sun_path holds 107 bytes and a NUL. Paths of 104 to 107 bytes used to pass the
    check and then fail to bind (exit 1); now they bind, and 108 is a start-up error."""
    for length in (104, 107):
        workdir = h.make_tmpdir()
        socket = os.path.join(workdir, "s" * (length - len(workdir) - 1))
        assert len(socket.encode()) == length
        served = start_daemon(env={"PAYMENTSD_SOCKET": socket}, workdir=workdir)
        assert served.health().status == h.pb().SERVING_STATUS_SERVING
        served.stop()
    workdir = h.make_tmpdir()
    socket = os.path.join(workdir, "s" * (108 - len(workdir) - 1))
    res = make_daemon(env={"PAYMENTSD_SOCKET": socket}, workdir=workdir).run_to_exit(timeout=20)
    _one_line(res, EX_CONFIG, "PAYMENTSD_SOCKET", socket)


def test_a_database_on_a_read_only_file_system_is_a_start_up_error(make_daemon, start_daemon):
    """Root passes every permission check, so the file is made read-only the way root meets it: a
    read-only mount. The daemon used to start and report SERVING while every write failed."""
    workdir = h.make_tmpdir()
    mount = os.path.join(workdir, "ro")
    os.mkdir(mount)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mount]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        db = os.path.join(mount, "payments.db")
        first = start_daemon(env={"PAYMENTSD_DB": db}, workdir=workdir)
        first.stop()
        subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
        res = make_daemon(env={"PAYMENTSD_DB": db}, workdir=h.make_tmpdir()).run_to_exit(timeout=20)
        _one_line(res, EX_CONFIG, "PAYMENTSD_DB", db)
    finally:
        subprocess.run(["umount", "-l", mount])
