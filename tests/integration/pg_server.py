"""A throwaway PostgreSQL server for the integration tests (no pytest dependency).

    >>> import pg_server
    >>> pg = pg_server.PostgresServer().start()
    >>> uri = pg.create_database()      # postgresql:///pd_...?host=...&port=...&user=postgres
    >>> pg.stop(); pg.start()           # same port and socket directory: URIs stay valid
    >>> pg.cleanup()

The cluster lives in a fresh directory under /tmp with trust authentication,
fsync off and its Unix socket in its own directory; it is thrown away at the
end. Tests need nothing installed but Debian's `postgresql` package (initdb
and pg_ctl under /usr/lib/postgresql/N/bin) and psycopg 3.

initdb and the server refuse to run as root, so under root (CI) the cluster
is owned by, and runs as, the `postgres` system user that the Debian package
creates; the daemons and the tests still connect as root through the socket,
which trust authentication allows.

`ExternalPostgres` uses a server someone else runs (PAYMENTSD_TEST_POSTGRES_URI,
a URI of a role that may CREATE DATABASE); it cannot be stopped by the tests.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid

POSTGRES_USER = "postgres"
# Enough for every daemon of one test (pool of 8 each) and the ones a failed
# test leaves behind until its teardown.
MAX_CONNECTIONS = 300


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server programs, or no user to run them as."""


def find_bin_dir() -> str:
    """The newest /usr/lib/postgresql/N/bin that has initdb and pg_ctl."""
    candidates = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        version = os.path.basename(os.path.dirname(d))
        if (re.fullmatch(r"\d+(\.\d+)?", version) and os.access(f"{d}/initdb", os.X_OK)
                and os.access(f"{d}/pg_ctl", os.X_OK)):
            candidates.append((float(version), d))
    if not candidates:
        raise PostgresUnavailable(
            "no /usr/lib/postgresql/*/bin/{initdb,pg_ctl}: install Debian's `postgresql` "
            "package (`make deps`)")
    return max(candidates)[1]


def free_port() -> int:
    # A race with another process is possible but harmless: start() then fails loudly.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_uri(db: str) -> bool:
    """True when PAYMENTSD_DB selects the PostgreSQL store (the daemon's own rule)."""
    return db.startswith(("postgresql://", "postgres://"))


def _connect(uri: str, **kw):
    import psycopg  # only PostgreSQL runs need it
    return psycopg.connect(uri, autocommit=True, connect_timeout=10, **kw)


def _unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class PostgresServer:
    """A private cluster: start(), stop(), start() again (same port and socket
    directory), create_database(), drop_database(), cleanup()."""

    def __init__(self, bin_dir: str | None = None, port: int | None = None):
        self.bin_dir = bin_dir or find_bin_dir()
        self.port = port or free_port()
        self.base = tempfile.mkdtemp(prefix="pd-pg-", dir="/tmp")
        self.data_dir = os.path.join(self.base, "data")
        # Short on purpose: the socket path ".../.s.PGSQL.PORT" must fit in 107 bytes.
        self.socket_dir = os.path.join(self.base, "s")
        self.log_path = os.path.join(self.base, "postgres.log")
        self._as_user: list[str] = []
        self._initialised = False
        self.running = False
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(POSTGRES_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root and there is no `{POSTGRES_USER}` user to run the server "
                    f"as (Debian's postgresql package creates it)") from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            # setpriv (util-linux, like runuser) keeps the environment and needs no PAM.
            self._as_user = ["setpriv", f"--reuid={self._uid}", f"--regid={self._gid}",
                             "--init-groups", "--"]

    # -- lifecycle --------------------------------------------------------

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"  # initdb refuses locales the machine lacks
        res = subprocess.run([*self._as_user, *argv], capture_output=True, text=True,
                             timeout=timeout, env=env, cwd=self.base, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
                f"\n--- {self.log_path} (tail) ---\n{self.log_tail()}")
        return res

    def _initdb(self):
        os.makedirs(self.socket_dir, exist_ok=True)
        if self._as_user:
            for path in (self.base, self.socket_dir):
                os.chown(path, self._uid, self._gid)
        # The daemons (another user when tests run as root) reach the socket through base.
        os.chmod(self.base, 0o755)
        self._run(f"{self.bin_dir}/initdb", "-D", self.data_dir, "-A", "trust",
                  "-U", POSTGRES_USER, "-E", "UTF8", "--no-sync", "--no-instructions")
        self._initialised = True

    def start(self) -> "PostgresServer":
        if self.running:
            return self
        if not self._initialised:
            self._initdb()
        opts = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                f"-c max_connections={MAX_CONNECTIONS}")
        self._run(f"{self.bin_dir}/pg_ctl", "-w", "-t", "60", "-D", self.data_dir,
                  "-l", self.log_path, "-o", opts, "start")
        self.running = True
        return self

    def stop(self, mode: str = "fast"):
        """pg_ctl stop: "fast" ends every session (what an outage looks like to a
        client), "immediate" is a crash of the server."""
        if not self.running:
            return
        self._run(f"{self.bin_dir}/pg_ctl", "-w", "-t", "60", "-D", self.data_dir,
                  "-m", mode, "stop")
        self.running = False

    def cleanup(self):
        try:
            self.stop("immediate")
        except Exception:  # noqa: BLE001 - best effort; the directory goes anyway
            pass
        shutil.rmtree(self.base, ignore_errors=True)

    can_restart = True

    # -- databases --------------------------------------------------------

    def uri(self, dbname: str = "postgres") -> str:
        # safe="/": host=/tmp/... reads as the socket directory it is (libpq takes either form).
        q = urllib.parse.urlencode({"host": self.socket_dir, "port": self.port,
                                    "user": POSTGRES_USER}, safe="/")
        return f"postgresql:///{dbname}?{q}"

    def create_database(self, prefix: str = "pd") -> str:
        """A new, empty database; returns its URI (for PAYMENTSD_DB)."""
        name = _unique_name(prefix)
        with _connect(self.uri()) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def drop_database(self, uri: str):
        _drop(self.uri(), uri)

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


class ExternalPostgres:
    """A server the tests do not own, named by a URI (PAYMENTSD_TEST_POSTGRES_URI)."""

    can_restart = False

    def __init__(self, admin_uri: str):
        if not is_uri(admin_uri):
            raise PostgresUnavailable(
                f"PAYMENTSD_TEST_POSTGRES_URI must be a postgresql:// URI, got {admin_uri!r}")
        self.admin_uri = admin_uri

    def start(self):
        return self

    def stop(self, mode: str = "fast"):
        raise RuntimeError("the tests cannot stop a PostgreSQL server they did not start")

    def cleanup(self):
        pass

    def uri(self, dbname: str) -> str:
        parts = urllib.parse.urlsplit(self.admin_uri)
        return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))

    def create_database(self, prefix: str = "pd") -> str:
        name = _unique_name(prefix)
        with _connect(self.admin_uri) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def drop_database(self, uri: str):
        _drop(self.admin_uri, uri)

    def log_tail(self, n: int = 30) -> str:
        return ""


def _drop(admin_uri: str, uri: str):
    from psycopg.conninfo import conninfo_to_dict
    name = conninfo_to_dict(uri)["dbname"]
    with _connect(admin_uri) as conn:
        # FORCE: a daemon killed a moment ago may still have a session ending.
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def from_environment():
    """The server the tests should use: PAYMENTSD_TEST_POSTGRES_URI, else a private one
    (not started yet)."""
    external = os.environ.get("PAYMENTSD_TEST_POSTGRES_URI")
    if external:
        return ExternalPostgres(external)
    return PostgresServer()


def wait_accepting(uri: str, timeout: float = 30.0):
    """Until a connection to uri succeeds (after a start)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _connect(uri) as conn:
                conn.execute("SELECT 1")
            return
        except Exception:  # noqa: BLE001 - retried until the deadline
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
