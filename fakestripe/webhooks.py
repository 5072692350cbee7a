"""Webhook forwarding: every event the fake emits is POSTed to a URL, as Stripe does.

Off until a URL is set (``--forward-to URL`` or ``POST /_fake/webhooks``),
like ``stripe listen --forward-to``. Each delivery is the event's exact
body (what ``GET /v1/events/{id}`` answers) with a ``Stripe-Signature``
made with the webhook secret and the fake's clock at the time of the
attempt, the same as ``GET /_fake/events/{id}/delivery``.

One background thread delivers, so an API call that emits an event never
waits for its delivery. First attempts go out in emission order. A 2xx
answer ends an event's delivery; any other answer, or a connection error or
timeout, is retried after `RETRY_DELAYS` (the last delay repeats) until
``retries`` retries are used up, as Stripe retries a failing endpoint. A
retry waiting its turn does not hold back the next events' first attempts.
Attempts always go to the URL and secret configured at the time of the
attempt; turning forwarding off drops what is still to be delivered.

Every attempt is logged (`WebhookForwarder.deliveries`).

Locks: `enqueue` and the control methods are called while the app holds
its lock; they take the forwarder's own lock, never the other way round.
The thread holds no lock while it talks to the receiver, which may call
the fake back (the daemon fetches the session of an event) without a
deadlock.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import http.client
import itertools
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from .wire import dumps

# Seconds to wait before retry 1, 2, ...; the last one repeats. Short, for tests:
# Stripe itself retries for three days.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
DEFAULT_RETRIES = 10            # at most 11 attempts, over about two minutes
ATTEMPT_TIMEOUT = 10.0          # seconds to connect, and to wait for the answer
DELIVERY_LOG_MAX = 10_000
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
CONTENT_TYPE = "application/json; charset=utf-8"


def signature_header(secret: str, payload: str, timestamp: int) -> str:
    """Stripe's ``Stripe-Signature``: HMAC-SHA256 over ``"{t}.{payload}"`` with the endpoint secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_delay(attempt: int) -> float:
    """Seconds between attempt ``attempt`` (1 for the first) failing and the next one."""
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1]


def check_url(url: str) -> str:
    """A URL the forwarder can POST to (``http://host[:port]/path``); ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the webhook URL must be http://host[:port]/path, not {url!r}")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"the webhook URL has a bad port: {url!r}") from None
    return url


@dataclass
class _Delivery:
    """An event to deliver, and how many attempts it has had."""

    event_id: str
    event_type: str
    payload: str          # the exact body, fixed when the event was emitted
    generation: int       # deliveries from before a reset or a switch-off are dropped
    attempts: int = 0


@dataclass
class _Outcome:
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookForwarder:
    """Delivers emitted events to ``url`` on a background thread (started when first needed)."""

    def __init__(self, clock: Callable[[], int], secret: str, url: str | None = None,
                 retries: int = DEFAULT_RETRIES, log: Callable[[str], None] | None = None):
        self._clock = clock   # the fake's clock, for the signature's timestamp
        self._initial = (url, secret, retries)
        self._log_line = log
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, _Delivery]] = []  # heap of (monotonic due time, seq, ..)
        self._seq = itertools.count()
        self._in_flight: _Delivery | None = None
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self.reset()

    # -- configuration (called under the app's lock) --------------------------

    def reset(self) -> None:
        """Back to the configuration it was made with; nothing pending, nothing logged."""
        with self._cond:
            self._log: deque[dict] = deque(maxlen=DELIVERY_LOG_MAX)
            self._counts: Counter[str] = Counter()
            self._drop_pending()
            self.configure(*self._initial)

    def configure(self, url: str | None, secret: str, retries: int) -> None:
        """Forward to ``url`` from now on, or (``None``) stop and drop what is pending."""
        if url is not None:
            check_url(url)
        if retries < 0:
            raise ValueError("retries must not be negative")
        with self._cond:
            if url is None or self._closed:
                self._drop_pending()
            self.url, self.secret, self.retries = url, secret, retries
            if url is not None and self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="fakestripe-webhooks",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _drop_pending(self) -> None:
        self._generation += 1
        self._due.clear()

    def settings(self) -> dict:
        with self._cond:
            return {"url": self.url, "retries": self.retries, "pending": self._pending()}

    def _pending(self) -> int:
        """Deliveries still to be attempted, or under way (and not dropped meanwhile)."""
        in_flight = self._in_flight is not None and self._in_flight.generation == self._generation
        return len(self._due) + in_flight

    # -- what tests look at ---------------------------------------------------

    def deliveries(self, event_id: str | None = None) -> list[dict]:
        """Every attempt, oldest first (optionally of one event)."""
        with self._cond:
            return [dict(entry) for entry in self._log
                    if event_id is None or entry["event_id"] == event_id]

    def counters(self) -> dict:
        with self._cond:
            return {"attempts": self._counts["attempts"], "delivered": self._counts["delivered"],
                    "failed_attempts": self._counts["failed_attempts"],
                    "gave_up": self._counts["gave_up"], "pending": self._pending()}

    # -- the store's side -----------------------------------------------------

    def enqueue(self, event: dict) -> None:
        """Deliver ``event`` (just emitted) if forwarding is on. Never blocks on a delivery."""
        with self._cond:
            if self.url is None or self._closed:
                return
            delivery = _Delivery(event["id"], event["type"], dumps(event), self._generation)
            heapq.heappush(self._due, (time.monotonic(), next(self._seq), delivery))
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread (an attempt under way ends first, within `ATTEMPT_TIMEOUT`)."""
        with self._cond:
            self._closed = True
            self._drop_pending()
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(ATTEMPT_TIMEOUT + 1)

    # -- the delivery thread --------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                delivery = self._next()
                if delivery is None:
                    return
                url, secret = self.url, self.secret
                self._in_flight = delivery
            delivery.attempts += 1
            started = time.time()
            outcome = self._attempt(url, secret, delivery.payload)
            with self._cond:
                self._in_flight = None
                if delivery.generation == self._generation:
                    self._record(delivery, url, outcome, started)

    def _next(self) -> _Delivery | None:
        """Wait (holding the condition) for the next delivery due; None once closed."""
        while not self._closed:
            if self._due:
                wait = self._due[0][0] - time.monotonic()
                if wait <= 0:
                    return heapq.heappop(self._due)[2]
                self._cond.wait(wait)
            else:
                self._cond.wait()
        return None

    def _attempt(self, url: str, secret: str, payload: str) -> _Outcome:
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        body = payload.encode("utf-8")
        headers = {"Content-Type": CONTENT_TYPE, "User-Agent": USER_AGENT,
                   "Stripe-Signature": signature_header(secret, payload, self._clock()),
                   "Content-Length": str(len(body))}
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80,
                                                timeout=ATTEMPT_TIMEOUT)
        try:
            connection.request("POST", target, body, headers)
            response = connection.getresponse()
            response.read()
            return _Outcome(status=response.status)
        except (OSError, http.client.HTTPException) as error:
            return _Outcome(error=f"{type(error).__name__}: {error}" if str(error)
                            else type(error).__name__)
        finally:
            connection.close()

    def _record(self, delivery: _Delivery, url: str, outcome: _Outcome, started: float) -> None:
        """Log the attempt and, if it failed and retries remain, schedule the next one."""
        self._counts["attempts"] += 1
        entry = {"event_id": delivery.event_id, "event_type": delivery.event_type,
                 "attempt": delivery.attempts, "url": url, "status": outcome.status,
                 "error": outcome.error, "at": round(started, 3),
                 "duration_ms": round((time.time() - started) * 1000, 1), "outcome": None,
                 "retry_in": None}
        if outcome.ok:
            self._counts["delivered"] += 1
            entry["outcome"] = "delivered"
        elif delivery.attempts <= self.retries:
            self._counts["failed_attempts"] += 1
            entry.update(outcome="retrying", retry_in=retry_delay(delivery.attempts))
            heapq.heappush(self._due, (time.monotonic() + entry["retry_in"], next(self._seq), delivery))
        else:
            self._counts["failed_attempts"] += 1
            self._counts["gave_up"] += 1
            entry["outcome"] = "gave_up"
        self._log.append(entry)
        if self._log_line is not None:
            answer = outcome.status if outcome.status is not None else outcome.error
            then = {"delivered": "delivered", "gave_up": "gave up",
                    "retrying": f"retry in {entry['retry_in']} s"}[entry["outcome"]]
            self._log_line(f"webhook {delivery.event_type} {delivery.event_id} to {url} attempt "
                           f"{delivery.attempts} -> {answer}; {then}")


def stderr_log(line: str) -> None:
    sys.stderr.write(f"fakestripe: {line}\n")
