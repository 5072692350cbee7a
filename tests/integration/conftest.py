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
import pg_server as pgs  # noqa: E402 - "pg_server" is the fixture

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
    config.addinivalue_line(
        "markers", "both_stores: run each test on the SQLite and on the PostgreSQL store")
    config.addinivalue_line(
        "markers", "sqlite_only(reason): in a both_stores module, run this test on SQLite only")
    config.addinivalue_line(
        "markers", "postgresql_only: run on the PostgreSQL store only")


# ---------------------------------------------------------------------------
# Which store a test's daemons use
#
# Every test whose fixtures reach `store_kind` (make_daemon and everything built
# on it) is parametrised here, so its id names the store: test_x[sqlite],
# test_x[postgresql]. A module opts in to both with `pytestmark =
# pytest.mark.both_stores`; a test in it that is about the SQLite file itself
# says @pytest.mark.sqlite_only("why"). Everything else runs once, on SQLite.

STORE_KINDS = ("sqlite", "postgresql")


def _store_kinds(definition) -> list[str]:
    if definition.get_closest_marker("postgresql_only"):
        return ["postgresql"]
    if definition.get_closest_marker("sqlite_only"):
        return ["sqlite"]
    if definition.get_closest_marker("both_stores"):
        return list(STORE_KINDS)
    return ["sqlite"]


def pytest_generate_tests(metafunc):
    if "store_kind" in metafunc.fixturenames:
        kinds = _store_kinds(metafunc.definition)
        metafunc.parametrize("store_kind", kinds, ids=kinds, indirect=True)


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
def store_kind(request) -> str:
    """"sqlite" or "postgresql" (set by pytest_generate_tests)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def pg_server(request):
    """The PostgreSQL server of this run (pg_server.py): started the first time a
    PostgreSQL test needs it, stopped and removed at the end. With
    PAYMENTSD_TEST_POSTGRES_URI set, that server instead (never stopped)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("PostgreSQL tests need psycopg 3: `make deps` "
                    "(pip install -r requirements-dev.txt)", pytrace=False)
    try:
        server = pgs.from_environment().start()
    except pgs.PostgresUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    if request.session.testsfailed and isinstance(server, pgs.PostgresServer):
        server.stop("immediate")
        # Past every test's capture: the terminal, so that the kept cluster is found.
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(
                f"PostgreSQL cluster of this run kept (tests failed): {server.base}; start it "
                f"with {server.bin_dir}/pg_ctl -D {server.data_dir} -l {server.log_path} "
                f"-o '-p {server.port} -k {server.socket_dir}' start (as {pgs.POSTGRES_USER} "
                f"under root)")
    else:
        server.cleanup()


@pytest.fixture
def store_db(store_kind, request):
    """What PAYMENTSD_DB every daemon of this test gets unless the test sets it:
    None on SQLite (each daemon its own file in its workdir, as always), else the
    URI of a fresh PostgreSQL database that all of the test's daemons share (as
    the hosts of one deployment do); a restarted Daemon keeps d.env["PAYMENTSD_DB"]."""
    if store_kind != "postgresql":
        yield None
        return
    server = request.getfixturevalue("pg_server")
    # A test that stopped the server and failed before starting it again must not
    # take the tests after it down with it.
    server.start()
    uri = server.create_database()
    yield uri
    if _failed(request):
        print(f"\n=== PostgreSQL database kept: {uri}")
    else:
        server.drop_database(uri)


@pytest.fixture
def make_daemon(paymentsd_bin, pb, request, store_db):
    """Factory: make_daemon(env={...}, args=[...], workdir=None) -> Daemon,
    not started (call .start() or .run_to_exit()).

    Every daemon gets its own directory under /tmp and is killed at teardown.
    Its store is the test's (store_db) unless env names a PAYMENTSD_DB.
    When the test failed, the directory is kept and the tail of each daemon's
    stderr is printed (shown by pytest under "Captured stdout teardown").
    """
    daemons: list[h.Daemon] = []

    def _make(env: dict | None = None, args=(), workdir: str | None = None,
              name: str = "paymentsd") -> h.Daemon:
        env = dict(env or {})
        if store_db is not None:
            env.setdefault("PAYMENTSD_DB", store_db)
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
