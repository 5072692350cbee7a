"""clients/python/example.py, run as a sibling service would run it.

The example and its client (clients/python/paymentsd_client.py) are meant to
be copied, so they must keep working. Here the example runs as a subprocess
against the real daemon and the fake Stripe, with a protobuf module generated
the way clients/python/README.md says, and its exit status and output are
checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import paymentsd_harness as h

EXAMPLE = h.REPO_ROOT / "clients" / "python" / "example.py"

# What example.py prints, line by line. The run's names are random; the
# payment id and checkout URL must be the same on every line that shows them.
EXPECTED_LINES = [
    r"health: SERVING \(paymentsd \S+\)",
    r"stock: (?P<sku>example-mug-[0-9a-f]+) on_hand=5 available=5",
    r"checkout: (?P<pay>pay_\S+) CREATED 2500 eur, pay at (?P<url>\S+)",
    r"same key again: same payment (?P=pay), same checkout URL",
    r"payment: (?P=pay) CREATED deal=(?P<deal>example-[0-9a-f]+) amount=2500 eur",
    r"sold out: 4 of (?P=sku) refused with insufficient_stock",
    r"unknown deal: NOT_FOUND deal_not_found",
    r"ok",
]


@pytest.fixture
def pb_dir(tmp_path) -> Path:
    """A directory holding payments/v1/payments_pb2.py, made with the command
    of clients/python/README.md (the one the harness's load_proto runs) and
    without the __init__.py files the harness adds, since the README says
    none are needed."""
    out = tmp_path / "pb"
    out.mkdir()
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{h.PROTO_DIR}",
           f"--python_out={out}", str(h.PROTO_DIR / h.PROTO_FILE)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"protoc failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}"
    assert (out / "payments" / "v1" / "payments_pb2.py").is_file()
    return out


def run_example(pb_dir: Path, args=(), env: dict | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    # The test's own PAYMENTSD_* settings must not reach the example; only
    # what the test passes does.
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("PAYMENTSD_") and k != "PYTHONPATH"}
    # The generated module only: the example must not lean on the test
    # directory (cwd is elsewhere; the script's own directory is always on sys.path).
    full_env = {**base, "PYTHONPATH": str(pb_dir), **(env or {})}
    return subprocess.run([sys.executable, str(EXAMPLE), *args], env=full_env,
                          cwd=cwd or pb_dir.parent, capture_output=True, text=True,
                          timeout=90)


def check_output(res: subprocess.CompletedProcess) -> dict:
    """Asserts exit 0 and the expected lines; returns the named groups."""
    shown = f"exit {res.returncode}\n--- stdout ---\n{res.stdout}--- stderr ---\n{res.stderr}"
    assert res.returncode == 0, f"example.py failed: {shown}"
    lines = res.stdout.splitlines()
    assert len(lines) == len(EXPECTED_LINES), (
        f"example.py printed {len(lines)} lines, expected {len(EXPECTED_LINES)}: {shown}")
    # One regex over all lines, so that (?P=pay) back-references work across them.
    m = re.fullmatch("\n".join(EXPECTED_LINES), "\n".join(lines))
    assert m, f"example.py's output is not what clients/python/README.md shows: {shown}"
    return m.groupdict()


@pytest.mark.test_timeout(180)
def test_example_runs_against_the_daemon(pay_daemon, fake_stripe, pb_dir, pb):
    d = pay_daemon()

    # Socket path as an argument.
    first = check_output(run_example(pb_dir, [d.socket_path]))
    assert first["url"].startswith(f"{fake_stripe.url}/pay/"), (
        f"checkout URL {first['url']} is not the fake Stripe's payment page")

    # The daemon agrees with what the example printed. The repeat with the same
    # key opened no second session, and the sold-out checkout never reached Stripe.
    with d.client() as c:
        pay = c.call_ok("GetPayment", pb.PaymentRef(deal_id=first["deal"]))
        assert (pay.payment_id, pay.checkout_url) == (first["pay"], first["url"])
        assert pay.status == pb.PAYMENT_STATUS_CREATED
        stock = c.call_ok("GetStock", pb.StockRef(sku=first["sku"]))
        assert (stock.on_hand, stock.reserved) == (5, 2), f"stock after the example: {stock}"
    assert fake_stripe.counters()["sessions_created"] == 1

    # Socket path from PAYMENTSD_SOCKET, and a second run against the same
    # daemon: the example uses fresh names, so it passes again.
    second = check_output(run_example(pb_dir, env={"PAYMENTSD_SOCKET": d.socket_path}))
    assert second["deal"] != first["deal"]
    assert fake_stripe.counters()["sessions_created"] == 2


def test_example_without_a_daemon_exits_69(pb_dir, tmp_path):
    res = run_example(pb_dir, [str(tmp_path / "no-daemon.sock")])
    assert res.returncode == 69, (
        f"unreachable daemon: exit {res.returncode}, expected 69 (EX_UNAVAILABLE)\n"
        f"stdout={res.stdout!r} stderr={res.stderr!r}")
    assert "cannot connect" in res.stderr, res.stderr
