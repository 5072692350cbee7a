"""Harness for paymentsd's integration tests.

Starts the real daemon binary with a private temporary directory and speaks
the wire protocol (protocol.md sections 1-3) over its Unix socket:

    frame = 4-byte big-endian length L, then L bytes of protobuf
            (client -> server: payments.v1.Request, server -> client:
             payments.v1.Response)

Nothing here depends on pytest, so the harness can be used from a REPL:

    >>> import paymentsd_harness as h
    >>> d = h.Daemon(h.binary_path()); d.start()
    >>> h.Client(d.socket_path).call("Health", h.pb().HealthRequest())

Every blocking operation has a timeout: a daemon that hangs makes the test
fail with a message, never makes CI hang.
"""

from __future__ import annotations

import atexit
import decimal
import importlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
PROTO_FILE = "payments/v1/payments.proto"

SERVICE = "payments.v1.Payments"
DEFAULT_MAX_FRAME = 1048576

# Secrets the harness hands to every daemon; they must never show up in its
# output (behaviour.md guarantee 11).
SECRET_KEY = "sk_test_fake"
WEBHOOK_SECRET = "whsec_test_secret"
SECRETS = (SECRET_KEY, WEBHOOK_SECRET)

# Default socket timeout for a single client operation (seconds).
IO_TIMEOUT = 10.0
# How long a daemon may take to become ready (seconds).
READY_TIMEOUT = 20.0

# Lines of a crash report (Swift runtime traps, the backtracer).
_CRASH_RE = re.compile(r"Fatal error|Program crashed|precondition failed|"
                       r"Assertion failed|Segmentation fault|\bcrashed:")

# journald understands "<N>" (syslog level 0-7) at the start of a line.
LOG_PREFIX_RE = re.compile(r"^<[0-7]>")

# Variables of the outer environment that must not leak into a daemon under
# test (they would change its configuration; PG* are libpq's defaults, which
# would change where and how a PostgreSQL store connects).
_SCRUBBED_PREFIXES = ("PAYMENTSD_", "STRIPE_", "PG")
_SCRUBBED_NAMES = ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "LISTEN_FDS",
                   "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
                   "JOURNAL_STREAM", "INVOCATION_ID", "WATCHDOG_USEC",
                   "WATCHDOG_PID")


# ---------------------------------------------------------------------------
# Generated protobuf module
# ---------------------------------------------------------------------------

_PB = None


def load_proto(outdir: str | os.PathLike | None = None):
    """Generate payments_pb2 from proto/ into outdir and import it.

    The module is generated once per process (protobuf's default descriptor
    pool refuses to load the same file twice) and never written into the
    repository.
    """
    global _PB
    if _PB is not None:
        return _PB
    if outdir is None:
        outdir = tempfile.mkdtemp(prefix="paymentsd-pb-")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
           f"--python_out={outdir}", str(PROTO_DIR / PROTO_FILE)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(
            f"protoc failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    for pkg in ("payments", "payments/v1"):
        (outdir / pkg / "__init__.py").touch()
    sys.path.insert(0, str(outdir))
    try:
        _PB = importlib.import_module("payments.v1.payments_pb2")
    finally:
        sys.path.remove(str(outdir))
    return _PB


def pb():
    """The generated payments.v1 module (generating it if needed)."""
    return load_proto()


def service_methods() -> list[str]:
    """Short names of all methods of payments.v1.Payments, from the proto."""
    return [m.name for m in pb().DESCRIPTOR.services_by_name["Payments"].methods]


def full_method(name: str) -> str:
    return f"{SERVICE}/{name}"


def code_name(code: int) -> str:
    try:
        return pb().Code.Name(code)
    except ValueError:
        return f"<unknown code {code}>"


def describe_status(status) -> str:
    details = ", ".join(f"{h.key}={h.value!r}" for h in status.details)
    return (f"{code_name(status.code)} reason={status.reason!r} "
            f"message={status.message!r} details=[{details}]")


def status_details(status) -> dict[str, str]:
    return {h.key: h.value for h in status.details}


# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------

def frame(body: bytes) -> bytes:
    """One frame: 4-byte big-endian length, then the body."""
    return struct.pack(">I", len(body)) + body


def header(length: int) -> bytes:
    return struct.pack(">I", length)


def make_request(method: str, message=None, *, request_id: int = 1,
                 timeout_ms: int = 0, idempotency_key: str = "",
                 headers: Iterable[tuple[str, str]] = (), raw_method: bool = False):
    """Build a payments.v1.Request.

    method is a short name ("Health") unless raw_method is true, in which
    case it is used verbatim (for unknown or empty method names).
    message is a protobuf message (encoded into payload), raw bytes, or None.
    """
    p = pb()
    if message is None:
        payload = b""
    elif isinstance(message, (bytes, bytearray)):
        payload = bytes(message)
    else:
        payload = message.SerializeToString()
    req = p.Request(
        request_id=request_id,
        method=method if raw_method else full_method(method),
        payload=payload,
        timeout_ms=timeout_ms,
        idempotency_key=idempotency_key,
    )
    for k, v in headers:
        req.headers.add(key=k, value=v)
    return req


def encode_request(req) -> bytes:
    return frame(req.SerializeToString())


class ConnectionClosed(Exception):
    """The server closed the connection (EOF or reset)."""

    def __init__(self, msg: str, *, partial: bytes = b"", reset: bool = False):
        super().__init__(msg)
        self.partial = partial
        self.reset = reset


class Client:
    """A connection to the daemon speaking real framing.

    All operations time out (IO_TIMEOUT by default), raising TimeoutError
    (socket.timeout), so a hung daemon fails the test.
    """

    def __init__(self, path: str, *, timeout: float = IO_TIMEOUT,
                 connect: bool = True, sndbuf: int | None = None):
        self.path = str(path)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._buf = bytearray()
        self._stash: dict[int, object] = {}   # responses read but not yet asked for
        self._next_id = 1
        self._sndbuf = sndbuf
        if connect:
            self.connect()

    # -- connection -------------------------------------------------------

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        if self._sndbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._sndbuf)
        try:
            s.connect(self.path)
        except BaseException:
            s.close()
            raise
        self.sock = s
        return self

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def shutdown_write(self):
        """Half-close: the server sees EOF, we can still read."""
        self.sock.shutdown(socket.SHUT_WR)

    def next_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    # -- sending ----------------------------------------------------------

    def send_bytes(self, data: bytes, timeout: float | None = None):
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        self.sock.sendall(data)

    def send_frame(self, body: bytes):
        self.send_bytes(frame(body))

    def send_request(self, req):
        self.send_bytes(encode_request(req))

    def request(self, method: str, message=None, *, request_id: int | None = None,
                **kw):
        """Build a Request with a fresh id (see make_request)."""
        if request_id is None:
            request_id = self.next_id()
        return make_request(method, message, request_id=request_id, **kw)

    # -- receiving --------------------------------------------------------

    def _fill(self, n: int, deadline: float):
        while len(self._buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"timed out waiting for {n} bytes (have {len(self._buf)})")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(max(65536, n - len(self._buf)))
            except ConnectionResetError:
                raise ConnectionClosed("connection reset by server",
                                       partial=bytes(self._buf), reset=True)
            except socket.timeout:
                raise TimeoutError(
                    f"timed out waiting for {n} bytes (have {len(self._buf)})")
            if not chunk:
                raise ConnectionClosed("server closed the connection (EOF)",
                                       partial=bytes(self._buf))
            self._buf += chunk

    def recv_raw_frame(self, timeout: float | None = None) -> bytes:
        """Read one frame's body. ConnectionClosed on EOF/reset."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._fill(4, deadline)
        (length,) = struct.unpack(">I", self._buf[:4])
        if length > 64 * 1024 * 1024:
            raise AssertionError(f"server sent an absurd frame length {length}")
        self._fill(4 + length, deadline)
        body = bytes(self._buf[4:4 + length])
        del self._buf[:4 + length]
        return body

    def recv_frame(self, timeout: float | None = None):
        """Read one frame and decode it as a payments.v1.Response."""
        if self._stash:
            rid = next(iter(self._stash))
            return self._stash.pop(rid)
        return self._read_response(timeout)

    def _read_response(self, timeout: float | None):
        body = self.recv_raw_frame(timeout)
        try:
            return pb().Response.FromString(body)
        except Exception as e:  # noqa: BLE001 - want the bytes in the message
            raise AssertionError(
                f"server sent a frame that is not a Response ({e}): {body[:200]!r}")

    def recv_response(self, request_id: int, timeout: float | None = None):
        """Read frames until the response to request_id; others are stashed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if request_id in self._stash:
                return self._stash.pop(request_id)
            resp = self._read_response(max(0.001, deadline - time.monotonic()))
            if resp.request_id == request_id:
                return resp
            if resp.request_id in self._stash:
                raise AssertionError(
                    f"two responses for request_id {resp.request_id}")
            self._stash[resp.request_id] = resp

    def expect_closed(self, timeout: float = 5.0) -> bytes:
        """Assert that the server closes the connection without sending more.

        EOF and ECONNRESET both count as closed. Returns nothing useful; raises
        AssertionError if a frame arrives, TimeoutError if it stays open.
        """
        if self._stash:
            raise AssertionError(f"unexpected responses pending: {self._stash}")
        deadline = time.monotonic() + timeout
        while True:
            if self._buf:
                raise AssertionError(
                    f"expected the connection to be closed, got bytes {bytes(self._buf[:100])!r}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"server did not close the connection within {timeout} s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return b""
            except socket.timeout:
                continue
            if not chunk:
                return b""
            self._buf += chunk

    # -- calls ------------------------------------------------------------

    def call(self, method: str, message=None, timeout_ms: int = 0,
             idempotency_key: str = "", request_id: int | None = None, *,
             headers: Iterable[tuple[str, str]] = (), raw_method: bool = False,
             timeout: float | None = None):
        """One call: returns (Status, payload bytes). Checks the echoed id."""
        req = self.request(method, message, request_id=request_id,
                           timeout_ms=timeout_ms, idempotency_key=idempotency_key,
                           headers=headers, raw_method=raw_method)
        self.send_request(req)
        resp = self.recv_response(req.request_id, timeout)
        return resp.status, resp.payload

    def call_ok(self, method: str, message=None, reply_type=None, **kw):
        """call() that asserts OK and decodes the reply (reply_type or by name)."""
        status, payload = self.call(method, message, **kw)
        assert status.code == pb().OK, (
            f"{method}: expected OK, got {describe_status(status)}")
        if reply_type is None:
            reply_type = _reply_type(method)
        return reply_type.FromString(payload)

    def pipeline(self, requests: Sequence, timeout: float | None = None) -> dict:
        """Send all requests at once, then read exactly len(requests) responses.

        Returns {request_id: Response}. Fails on a duplicate or unknown id.
        """
        data = b"".join(encode_request(r) for r in requests)
        self.send_bytes(data, timeout)
        return self.read_responses([r.request_id for r in requests], timeout)

    def read_responses(self, ids: Iterable[int], timeout: float | None = None) -> dict:
        wanted = list(ids)
        assert len(set(wanted)) == len(wanted), "request ids must be unique"
        want = set(wanted)
        got: dict[int, object] = {}
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(got) < len(want):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(want - set(got))
                raise AssertionError(
                    f"got {len(got)}/{len(want)} responses before the timeout; "
                    f"missing ids (first 20): {missing[:20]}")
            try:
                resp = self.recv_frame(remaining)
            except TimeoutError:
                continue
            except ConnectionClosed as e:
                missing = sorted(want - set(got))
                raise AssertionError(
                    f"connection closed after {len(got)}/{len(want)} responses "
                    f"({e}); missing ids (first 20): {missing[:20]}")
            rid = resp.request_id
            assert rid in want, (
                f"response with request_id {rid} that was never sent "
                f"(status {describe_status(resp.status)})")
            assert rid not in got, f"request_id {rid} answered twice"
            got[rid] = resp
        return got


def _reply_type(method: str):
    p = pb()
    m = p.DESCRIPTOR.services_by_name["Payments"].methods_by_name[method]
    return getattr(p, m.output_type.name)


def connect_quietly(path: str, timeout: float = 2.0) -> Client | None:
    try:
        return Client(path, timeout=timeout)
    except OSError:
        return None


# ---------------------------------------------------------------------------
# Prometheus text format
# ---------------------------------------------------------------------------

_SAMPLE_RE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>.*)\})?'
    r'\s+(?P<value>\S+)(?:\s+(?P<ts>-?\d+))?$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_prometheus(text: str):
    """Parse Prometheus text exposition into (samples, types).

    samples: list of (name, {label: value}, float); types: {family: type}.
    Raises AssertionError on a line that is not valid exposition format.
    """
    samples = []
    types: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        m = _SAMPLE_RE.match(line)
        assert m, f"metrics line {lineno} is not in Prometheus text format: {line!r}"
        labels = {}
        raw = m.group("labels")
        if raw:
            pos = 0
            raw = raw.rstrip()
            while pos < len(raw):
                lm = _LABEL_RE.match(raw, pos)
                assert lm and lm.end() > pos, (
                    f"metrics line {lineno}: bad labels {raw!r}")
                labels[lm.group(1)] = (lm.group(2).replace('\\"', '"')
                                       .replace("\\n", "\n").replace("\\\\", "\\"))
                pos = lm.end()
        v = m.group("value")
        try:
            value = float(v)
        except ValueError:
            raise AssertionError(f"metrics line {lineno}: bad value {v!r}: {line!r}")
        samples.append((m.group("name"), labels, value))
    return samples, types


def find_samples(samples, name: str, **labels):
    """Samples named name whose labels include all of the given ones."""
    return [(n, l, v) for (n, l, v) in samples
            if n == name and all(l.get(k) == val for k, val in labels.items())]


# ---------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------

def binary_path() -> Path:
    env = os.environ.get("PAYMENTSD_BIN")
    return Path(env) if env else REPO_ROOT / ".build" / "debug" / "paymentsd"


_LIVE: dict[int, subprocess.Popen] = {}


@atexit.register
def _kill_leftovers():
    for proc in list(_LIVE.values()):
        if proc.poll() is None:
            try:
                proc.kill()
                proc.wait(5)
            except Exception:  # noqa: BLE001
                pass


def make_tmpdir(prefix: str = "pd-") -> str:
    """A short private directory under /tmp (Unix socket paths max 107 bytes)."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def base_env(workdir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED_NAMES}
    env.update({
        "PAYMENTSD_SOCKET": os.path.join(workdir, "p.sock"),
        "PAYMENTSD_DB": os.path.join(workdir, "payments.db"),
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "PAYMENTSD_LOG_LEVEL": "debug",
        # As the unit runs it: a crash report names frames, never registers or memory.
        "SWIFT_BACKTRACE": systemd_backtrace_setting(),
    })
    return env


def systemd_backtrace_setting() -> str:
    """The unit's SWIFT_BACKTRACE, so the tests run the daemon the way systemd does."""
    unit = REPO_ROOT / "systemd" / "paymentsd.service"
    for line in unit.read_text().splitlines():
        if line.startswith("Environment=SWIFT_BACKTRACE="):
            return line.split("=", 2)[2]
    raise AssertionError("systemd/paymentsd.service sets no SWIFT_BACKTRACE")


class DaemonError(AssertionError):
    pass


class Daemon:
    """The real paymentsd binary with a private temporary directory.

    env: overrides of the default environment; a value of None removes the
    variable. args: extra command-line arguments.
    """

    def __init__(self, binary: str | os.PathLike, env: dict | None = None,
                 args: Sequence[str] = (), workdir: str | None = None,
                 name: str = "paymentsd"):
        self.binary = Path(binary)
        self.workdir = workdir or make_tmpdir()
        self.name = name
        self.env = base_env(self.workdir)
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = str(v)
        self.args = list(args)
        self.socket_path = self.env.get("PAYMENTSD_SOCKET", "")
        self.db_path = self.env.get("PAYMENTSD_DB", "")
        self.stderr_path = os.path.join(self.workdir, f"{name}.stderr")
        self.stdout_path = os.path.join(self.workdir, f"{name}.stdout")
        self.proc: subprocess.Popen | None = None
        self.clients: list[Client] = []

    # -- lifecycle --------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, "daemon not started"
        return self.proc.pid

    def start(self, wait: bool = True, ready_timeout: float = READY_TIMEOUT):
        if not self.binary.exists():
            raise DaemonError(
                f"paymentsd binary not found at {self.binary} "
                f"(build it, or set PAYMENTSD_BIN)")
        with open(self.stderr_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(
                [str(self.binary), *self.args], env=self.env, cwd=self.workdir,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True)
        _LIVE[self.proc.pid] = self.proc
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT):
        """Wait until the socket accepts and Health answers OK/SERVING."""
        p = pb()
        deadline = time.monotonic() + timeout
        last = "socket never accepted a connection"
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise DaemonError(
                    f"paymentsd exited with status {rc} before it was ready.\n"
                    f"--- stderr ---\n{self.stderr_text()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise DaemonError(
                    f"paymentsd not ready within {timeout} s ({last}).\n"
                    f"--- stderr ---\n{self.stderr_text()}")
            try:
                with Client(self.socket_path, timeout=min(remaining, 5.0)) as c:
                    status, payload = c.call("Health", p.HealthRequest(),
                                             timeout=remaining)
                if status.code == p.OK:
                    reply = p.HealthReply.FromString(payload)
                    if reply.status == p.SERVING_STATUS_SERVING:
                        return self
                    last = f"Health answered status {reply.status}"
                else:
                    last = f"Health answered {describe_status(status)}"
            except (OSError, ConnectionClosed) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int):
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit; DaemonError (and a kill) if it does not exit in time."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DaemonError(
                f"paymentsd did not exit within {timeout} s.\n"
                f"--- stderr (tail) ---\n{self.stderr_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send sig (SIGTERM) and wait for the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def kill(self):
        for c in self.clients:
            c.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            _LIVE.pop(self.proc.pid, None)

    def run_to_exit(self, timeout: float = 20.0) -> subprocess.CompletedProcess:
        """Start without waiting for readiness and wait for the process to end
        (for --version, crash-points, bad configuration)."""
        self.start(wait=False)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DaemonError(
                f"paymentsd {' '.join(self.args)} was still running after "
                f"{timeout} s (expected it to exit).\n--- stderr ---\n"
                f"{self.stderr_text()}")
        _LIVE.pop(self.proc.pid, None)
        return subprocess.CompletedProcess(self.proc.args, rc,
                                           self.stdout_text(), self.stderr_text())

    # -- inspection -------------------------------------------------------

    def stderr_text(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n: int = 40) -> str:
        """The last n lines of stderr, preceded by any crash report lines
        (a Swift trap's backtrace would otherwise push them out)."""
        lines = self.stderr_text().splitlines()
        crash = [l for l in lines if _CRASH_RE.search(l)]
        head = (["--- crash report lines ---", *crash[:10], "--- tail ---"]
                if crash else [])
        return "\n".join(head + lines[-n:])

    def stdout_text(self) -> str:
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/pid/status")

    def client(self, timeout: float = IO_TIMEOUT, **kw) -> Client:
        c = Client(self.socket_path, timeout=timeout, **kw)
        self.clients.append(c)
        return c

    def health(self):
        with Client(self.socket_path) as c:
            return c.call_ok("Health", pb().HealthRequest())

    def metrics_text(self) -> str:
        with Client(self.socket_path) as c:
            return c.call_ok("Metrics", pb().MetricsRequest()).text

    def db_rows(self, sql: str, *params) -> list[tuple]:
        """Rows of a read-only query on the daemon's database, either store (see db_rows)."""
        return db_rows(self.db_path, sql, *params)

    def db_execute(self, sql: str, *params) -> int:
        """Writes to the daemon's database behind its back, either store (see db_execute)."""
        return db_execute(self.db_path, sql, *params)

    def cleanup(self, keep: bool = False):
        self.kill()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Reading the daemon's database (white-box checks)
# ---------------------------------------------------------------------------

def is_postgres(db: str) -> bool:
    """True when PAYMENTSD_DB selects the PostgreSQL store (the daemon's own rule)."""
    return db.startswith(("postgresql://", "postgres://"))


def db_rows(db: str, sql: str, *params) -> list[tuple]:
    """Rows of a read-only query on a daemon's database: a SQLite file path or a
    PostgreSQL URI (what PAYMENTSD_DB holds). The query is written once, SQLite style
    (`?` placeholders); the two schemas have the same tables and columns, and
    payments, refunds, claims and stripe_event_refunds have a `rowid` on both.
    Values come back as plain ints, strs and bytes on both stores, so tests compare
    them the same way. The daemon may be running: nothing here writes or locks."""
    if is_postgres(db):
        import psycopg  # only PostgreSQL runs need it
        # Read-only at the server too: a slip in a test's SQL cannot change what it checks.
        with psycopg.connect(db, autocommit=True, connect_timeout=10,
                             options="-c default_transaction_read_only=on") as conn:
            rows = conn.execute(_pg_placeholders(sql), params).fetchall()
    else:
        import sqlite3
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    return [tuple(_plain(v) for v in row) for row in rows]


def db_execute(db: str, sql: str, *params) -> int:
    """One write statement on a daemon's database (white-box test setup: ageing a row,
    moving a deadline), committed at once; returns the number of rows it changed.
    Written once, SQLite style (`?` placeholders), like db_rows. On SQLite stop the
    daemon first (the test then does not race its writes or its lock); on PostgreSQL
    the write is an ordinary autocommit statement, safe while the daemon runs."""
    if is_postgres(db):
        import psycopg
        with psycopg.connect(db, autocommit=True, connect_timeout=10) as conn:
            return conn.execute(_pg_placeholders(sql), params).rowcount
    import sqlite3
    conn = sqlite3.connect(db, timeout=10)
    try:
        with conn:
            return conn.execute(sql, params).rowcount
    finally:
        conn.close()


def _pg_placeholders(sql: str) -> str:
    """SQLite's `?` as psycopg's `%s` (and a literal `%` as `%%`), leaving quoted text alone."""
    out = []
    quote = None
    for ch in sql:
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


def _plain(v):
    # bigint comes back as int already; these are what the other PostgreSQL types
    # map to in Python, made to look like what sqlite3 returns.
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, memoryview):
        return bytes(v)
    if isinstance(v, decimal.Decimal) and v == v.to_integral_value():
        return int(v)
    return v


def check_log_lines(text: str) -> list[str]:
    """Lines of text that lack a syslog "<N>" prefix (empty list = all good)."""
    return [line for line in text.splitlines() if not LOG_PREFIX_RE.match(line)]


def assert_clean_stderr(daemon: Daemon, extra_secrets: Iterable[str] = ()):
    """Every line has a journald level prefix; no secret appears."""
    text = daemon.stderr_text()
    bad = check_log_lines(text)
    assert not bad, (
        f"{len(bad)} stderr line(s) without a syslog <0-7> prefix, e.g.:\n"
        + "\n".join(repr(b) for b in bad[:10]))
    for secret in (*SECRETS, *extra_secrets):
        assert secret not in text, f"secret {secret[:6]}... appears in stderr"


# ---------------------------------------------------------------------------
# Acting as another user (section 6)
# ---------------------------------------------------------------------------

# Stdlib-only client run under setpriv as another uid. argv: socket path, then
# one hex-encoded frame per argument. Sends each frame and waits for one
# response before the next (so the connection must stay open), prints one
# line per frame: the response frame body in hex, or "EOF". Connection
# errors print "ERR <errno name>" and exit 3.
_AS_USER_SCRIPT = r"""
import errno, socket, struct, sys
path, frames = sys.argv[1], [bytes.fromhex(h) for h in sys.argv[2:]]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(path)
except OSError as e:
    print("ERR", errno.errorcode.get(e.errno, str(e.errno)), flush=True)
    sys.exit(3)
buf = b""
def need(n):
    global buf
    while len(buf) < n:
        try:
            c = s.recv(65536)
        except ConnectionResetError:
            c = b""
        if not c:
            return False
        buf += c
    return True
for f in frames:
    try:
        s.sendall(f)
    except OSError:
        print("EOF", flush=True); sys.exit(0)
    if not need(4):
        print("EOF", flush=True); sys.exit(0)
    (n,) = struct.unpack(">I", buf[:4])
    if not need(4 + n):
        print("EOF", flush=True); sys.exit(0)
    print(buf[4:4 + n].hex(), flush=True)
    buf = buf[4 + n:]
"""

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY_UID = 65534
NOBODY_GID = 65534


def call_as_user(socket_path: str, requests: Sequence, uid: int = NOBODY_UID,
                 gid: int = NOBODY_GID, timeout: float = 30.0) -> list:
    """Send requests (payments.v1.Request) from a process running as uid/gid
    (no supplementary groups), one after the other on one connection.

    Returns a list with a decoded Response per request, or the string "EOF"
    where the server closed the connection instead.
    """
    hexes = [encode_request(r).hex() for r in requests]
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
           SYSTEM_PYTHON, "-I", "-c", _AS_USER_SCRIPT, socket_path, *hexes]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = res.stdout.split()
    if res.returncode != 0:
        raise AssertionError(
            f"client as uid {uid} failed (status {res.returncode}): "
            f"stdout={res.stdout!r} stderr={res.stderr!r}")
    result = []
    for line in out:
        if line == "EOF":
            result.append("EOF")
        else:
            result.append(pb().Response.FromString(bytes.fromhex(line)))
    return result
