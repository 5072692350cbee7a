"""``python3 -m fakestripe --port PORT``: run the fake until interrupted or terminated.

Once listening it prints one line, ``fakestripe listening on
http://HOST:PORT``, so that a harness started with ``--port 0`` can read
the port it got.

With ``--forward-to URL`` (e.g. ``http://127.0.0.1:8080/stripe/webhook``) it
also POSTs every event it emits to that URL, signed with ``--webhook-secret``,
as ``stripe listen --forward-to`` does; a delivery that does not get a 2xx
answer is retried after 0.2, 0.5, 1, 2, 5, 10, 20 s, then every 30 s, at most
``--forward-retries`` times (see ``fakestripe/webhooks.py``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .app import DEFAULT_API_KEY, DEFAULT_WEBHOOK_SECRET
from .server import FakeStripe
from .webhooks import DEFAULT_RETRIES, check_url


def _url(value: str) -> str:
    try:
        return check_url(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _retries(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"not a number of retries (0 or more): {value!r}")
    return int(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m fakestripe", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the only secret key accepted")
    parser.add_argument("--webhook-secret", default=DEFAULT_WEBHOOK_SECRET,
                        help="signs webhook deliveries: the forwarded ones and those of "
                             "GET /_fake/events/{id}/delivery")
    parser.add_argument("--forward-to", metavar="URL", type=_url,
                        help="POST every event the fake emits to this http:// URL, with a "
                             "Stripe-Signature header, as Stripe does (default: off; "
                             "POST /_fake/webhooks turns it on or off at run time)")
    parser.add_argument("--forward-retries", metavar="N", type=_retries, default=DEFAULT_RETRIES,
                        help="retries of a forwarded event that got no 2xx answer, after "
                             "0.2, 0.5, 1, 2, 5, 10, 20 s, then every 30 s "
                             f"(default: {DEFAULT_RETRIES})")
    parser.add_argument("--quiet", action="store_true", help="do not log each request to stderr")
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="stop when standard input closes: a parent that holds the other end of a pipe "
                             "stops the fake by closing it, or by dying")
    args = parser.parse_args(argv)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    if args.exit_on_stdin_eof:
        def wait_for_eof():
            while sys.stdin.buffer.read(4096):
                pass
            stopped.set()
        threading.Thread(target=wait_for_eof, daemon=True).start()
    fake = FakeStripe(args.host, args.port, args.api_key, args.webhook_secret, quiet=args.quiet,
                      forward_to=args.forward_to, forward_retries=args.forward_retries).start()
    print(f"fakestripe listening on {fake.url}", flush=True)
    try:
        stopped.wait()
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
