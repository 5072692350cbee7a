"""The HTTP/1.1 server around the fake, and `FakeStripe`, the handle tests hold.

One thread per connection (the daemon opens dozens at once), keep-alive,
and a Content-Length on every answer. A scripted drop closes the
connection without writing anything, as a network failure would.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from .app import DEFAULT_API_KEY, DEFAULT_WEBHOOK_SECRET, App
from .webhooks import DEFAULT_RETRIES, check_url, stderr_log
from .wire import Request


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle's algorithm
    # and the client's delayed ACK add 40 ms to every keep-alive answer.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return "fakestripe"

    def do_GET(self):
        self._dispatch()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        request = Request(self.command, url.path, url.query,
                          {name.lower(): value for name, value in self.headers.items()},
                          self._read_body())
        response = self.server.app.handle(request)
        if response.drop:
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format, *args):
        if not self.server.quiet:
            sys.stderr.write(f"fakestripe: {self.address_string()} {format % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the daemon may open dozens of connections at once

    def __init__(self, address, app_factory, quiet: bool):
        super().__init__(address, _Handler)
        self.quiet = quiet
        self.app = app_factory(self.server_address)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request, client_address):
        self.app.connection_accepted()
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """End keep-alive connections so their threads stop serving a stopped fake."""
        with self._open_lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class FakeStripe:
    """A fake Stripe on a background thread::

        fs = FakeStripe(port=0).start()
        fs.url  # "http://127.0.0.1:PORT", the STRIPE_API_BASE for the daemon
        fs.stop()

    Also a context manager: ``with FakeStripe() as fs: ...``.

    ``forward_to``: POST every event it emits to this ``http://`` URL (see
    `webhooks.py`), retrying a failed delivery up to ``forward_retries`` times.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = DEFAULT_API_KEY,
                 webhook_secret: str = DEFAULT_WEBHOOK_SECRET, quiet: bool = True,
                 forward_to: str | None = None, forward_retries: int = DEFAULT_RETRIES):
        self.host, self.port = host, port
        self.api_key, self.webhook_secret = api_key, webhook_secret
        self.quiet = quiet
        if forward_to is not None:
            check_url(forward_to)  # a ValueError here, not in the server's thread
        self.forward_to, self.forward_retries = forward_to, forward_retries
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "FakeStripe":
        def make_app(address) -> App:
            self.port = address[1]
            return App(self.url, self.api_key, self.webhook_secret, self.forward_to,
                       self.forward_retries, log=None if self.quiet else stderr_log)

        self._server = _Server((self.host, self.port), make_app, self.quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakestripe",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_open_connections()
        self._server.server_close()
        self._thread.join()
        self._server.app.close()
        self._server = self._thread = None

    def __enter__(self) -> "FakeStripe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
