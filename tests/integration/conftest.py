"""pytest fixtures for paymentsd's integration tests (see README.md)."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The repository root, for `import fakestripe` (the project's fake Stripe).
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

import paymentsd_harness as h  # noqa: E402

# Per-test wall-clock limit (seconds) without the pytest-timeout plugin:
# SIGALRM raises in the test's (main) thread. A test can ask for another
# limit with @pytest.mark.test_timeout(seconds); PAYMENTSD_TEST_TIMEOUT
# overrides the default. Socket operations in the harness have their own,
# much shorter timeouts; this is the backstop.
DEFAULT_TEST_TIMEOUT = float(os.environ.get("PAYMENTSD_TEST_TIMEOUT", "120"))


class TestTimedOut(Exception):
    pass


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "test_timeout(seconds): wall-clock limit of one test")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    marker = item.get_closest_marker("test_timeout")
    limit = float(marker.args[0]) if marker else DEFAULT_TEST_TIMEOUT

    def on_alarm(signum, frame):
        # Show where every thread was, then fail the test.
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        raise TestTimedOut(f"{item.nodeid} exceeded its {limit:.0f} s limit")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    setup = getattr(request.node, "rep_setup", None)
    return (rep is not None and rep.failed) or (setup is not None and setup.failed)


# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """The payments.v1 protobuf module, generated from proto/ for this run."""
    return h.load_proto(tmp_path_factory.mktemp("pb"))


@pytest.fixture(scope="session")
def paymentsd_bin() -> Path:
    path = h.binary_path()
    if not path.exists():
        pytest.fail(
            f"paymentsd binary not found at {path}: run `swift build` (or "
            f"`make build`) first, or point PAYMENTSD_BIN at the binary",
            pytrace=False)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not executable", pytrace=False)
    return path


@pytest.fixture
def make_daemon(paymentsd_bin, pb, request):
    """Factory: make_daemon(env={...}, args=[...], workdir=None) -> Daemon,
    not started (call .start() or .run_to_exit()).

    Every daemon gets its own directory under /tmp and is killed at teardown.
    When the test failed, the directory is kept and the tail of each daemon's
    stderr is printed (shown by pytest under "Captured stdout teardown").
    """
    daemons: list[h.Daemon] = []

    def _make(env: dict | None = None, args=(), workdir: str | None = None,
              name: str = "paymentsd") -> h.Daemon:
        d = h.Daemon(paymentsd_bin, env=env, args=args, workdir=workdir, name=name)
        daemons.append(d)
        return d

    yield _make

    failed = _failed(request)
    for d in daemons:
        d.kill()
    if failed:
        for d in daemons:
            print(f"\n=== {d.name} workdir kept: {d.workdir}")
            print(f"=== {d.name} stderr (last 40 lines) ===\n{d.stderr_tail()}")
    for d in daemons:
        d.cleanup(keep=failed)


@pytest.fixture
def start_daemon(make_daemon):
    """Factory: start_daemon(env={...}, args=[...]) -> a Daemon that is ready
    (socket accepts, Health answers SERVING)."""

    def _start(env: dict | None = None, args=(), workdir: str | None = None,
               name: str = "paymentsd", ready_timeout: float = h.READY_TIMEOUT):
        d = make_daemon(env=env, args=args, workdir=workdir, name=name)
        return d.start(wait=True, ready_timeout=ready_timeout)

    return _start


@pytest.fixture
def daemon(start_daemon) -> h.Daemon:
    """A running daemon with the default test configuration."""
    return start_daemon()


@pytest.fixture
def client(daemon) -> h.Client:
    """A connection to the default daemon."""
    return daemon.client()


# ---------------------------------------------------------------------------
# The fake Stripe (fakestripe/, in-process on a loopback port)


@pytest.fixture
def fake_stripe(request):
    """A fresh fake Stripe for this test (checkout_support.FakeStripeHandle).

    At teardown it asserts that every request the daemon sent passed the
    fake's check against Stripe's own parameter schema.
    """
    import checkout_support as cs

    fake = cs.FakeStripeHandle.start()
    yield fake
    try:
        if _failed(request):
            reqs = fake.requests()
            print(f"\n=== fake Stripe: {len(reqs)} API request(s), last 20 ===")
            for r in reqs[-20:]:
                print(f"  {r['method']} {r['path']} -> {r['status']}"
                      f"{' (dropped)' if r['dropped'] else ''}"
                      f"{' (replayed)' if r['replayed'] else ''} key={r['idempotency_key']}")
        fake.assert_param_checks_passed()
    finally:
        fake.stop()


@pytest.fixture
def pay_daemon(start_daemon, fake_stripe):
    """Factory: pay_daemon(env={...}) -> a ready daemon talking to fake_stripe."""

    def _start(env: dict | None = None, **kw) -> h.Daemon:
        return start_daemon(env={"STRIPE_API_BASE": fake_stripe.url, **(env or {})}, **kw)

    return _start
