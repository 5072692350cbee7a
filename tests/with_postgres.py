#!/usr/bin/env python3
"""Runs a command beside a throwaway PostgreSQL server: `make test` (the Swift tests) and `make
bench` use it. The command sees PAYMENTSD_TEST_POSTGRES_URI (the server's `postgres` database, for
tests that create their own) and BENCH_POSTGRES_URI (an empty database); the server goes away
with the command, whose exit status this returns.

    python3 tests/with_postgres.py [--durable] -- COMMAND [ARG...]

--durable turns fsync and synchronous commits back on (the test server runs without them, for
speed), so a benchmark compares a durable PostgreSQL commit with SQLite's synchronous=FULL one.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration"))
import pg_server  # noqa: E402


def main(argv: list[str]) -> int:
    durable = "--durable" in argv[: argv.index("--")] if "--" in argv else False
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print(__doc__.strip(), file=sys.stderr)
        return 64
    command = argv[argv.index("--") + 1:]
    server = pg_server.PostgresServer().start()
    try:
        if durable:
            with pg_server._connect(server.uri()) as conn:
                for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                    conn.execute(f"ALTER SYSTEM SET {setting} = on")
                conn.execute("SELECT pg_reload_conf()")
        env = dict(os.environ, PAYMENTSD_TEST_POSTGRES_URI=server.uri(),
                   BENCH_POSTGRES_URI=server.create_database("bench"))
        return subprocess.call(command, env=env)
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
