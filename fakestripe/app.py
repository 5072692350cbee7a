"""The fake's request pipeline, independent of the HTTP server.

A `/v1` request goes through, in order:

1. authentication (``Authorization: Bearer <api key>``; 401 otherwise);
2. routing (404 "Unrecognized request URL" for what the fake does not serve);
3. a scripted fault, if one is pending for the route (`faults.py`);
4. the idempotency key of a POST (`idempotency.py`): claim, replay or refuse;
5. the parameter check against Stripe's schema (`spec.py`), then the
   endpoint itself (`api.py`) under the one lock that guards all state.

`/_fake/...` (control, `control.py`) and `/pay/...` (the payment page,
`paypage.py`) need no authentication and are not counted as API requests.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass

from . import api, control, paypage
from .errors import ParamError, StripeError
from .faults import FaultScript
from .formcodec import nest, parse_pairs
from .idempotency import MAX_KEY_LENGTH, IdempotencyStore
from .spec import ApiSpec, Route
from .store import Origin, Store
from .webhooks import DEFAULT_RETRIES, WebhookForwarder
from .wire import Request, Response, new_id

DEFAULT_API_KEY = "sk_test_fake"
DEFAULT_WEBHOOK_SECRET = "whsec_fake"
REQUEST_LOG_MAX = 10_000
FORM = "application/x-www-form-urlencoded"


class App:
    def __init__(self, base_url: str, api_key: str = DEFAULT_API_KEY,
                 webhook_secret: str = DEFAULT_WEBHOOK_SECRET, forward_to: str | None = None,
                 forward_retries: int = DEFAULT_RETRIES, log=None):
        self.base_url = base_url
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.forward_retries = forward_retries
        self.spec = ApiSpec()
        self.routes = self.spec.routes(api.HANDLERS)
        self.lock = threading.RLock()
        # Forwards each emitted event (off unless forward_to); lives across resets.
        self.webhooks = WebhookForwarder(self.now, webhook_secret, forward_to, forward_retries, log)
        self.reset()

    def reset(self) -> None:
        """Forget everything: objects, events, keys, faults, counters, clock, webhook
        deliveries (forwarding goes back to what the fake was started with)."""
        with self.lock:
            self.clock_offset = 0
            self.webhooks.reset()
            self.store = Store(self.spec, self.base_url, self.now, self.webhooks.enqueue)
            self.idempotency = IdempotencyStore()
            self.faults = FaultScript(api.HANDLERS)
            self.request_counts: Counter[str] = Counter()
            self.param_failures: list[dict] = []
            self.idempotency_keys: dict[str, list[str]] = {}
            self.idempotent_replays = 0
            self.faults_injected = 0
            self.auth_failures = 0
            # TCP connections the server accepted: a client that reuses its connections opens few.
            self.connections_accepted = 0
            self.request_log: deque[dict] = deque(maxlen=REQUEST_LOG_MAX)

    def close(self) -> None:
        """Stop the webhook delivery thread (the server has stopped serving)."""
        self.webhooks.close()

    def connection_accepted(self) -> None:
        with self.lock:
            self.connections_accepted += 1

    def now(self) -> int:
        """The fake's clock: real time, moved forward by ``POST /_fake/clock``."""
        return int(time.time()) + self.clock_offset

    def counters(self) -> dict:
        with self.lock:
            by_status = Counter(s["status"] for s in self.store.sessions.values())
            return {
                "requests": dict(self.request_counts),
                "sessions_created": len(self.store.sessions),
                "sessions_by_status": {status: by_status[status]
                                       for status in ("open", "complete", "expired")},
                "refunds_created": len(self.store.refunds),
                "events_created": len(self.store.events),
                "param_check_failures": len(self.param_failures),
                "param_check_failure_details": list(self.param_failures),
                "idempotent_replays": self.idempotent_replays,
                "faults_injected": self.faults_injected,
                "auth_failures": self.auth_failures,
                "connections_accepted": self.connections_accepted,
                "idempotency_keys": {route: list(keys) for route, keys in self.idempotency_keys.items()},
                "webhook_deliveries": self.webhooks.counters(),
            }

    # -- dispatch ------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        request_id = new_id("req_", 14)
        try:
            if request.path.startswith("/_fake/"):
                response = control.handle(self, request)
            elif request.path.startswith("/pay/"):
                response = paypage.handle(self, request)
            else:
                response = self._handle_api(request, request_id)
        except Exception:  # a bug in the fake: say so in Stripe's shape, keep serving
            traceback.print_exc(file=sys.stderr)
            response = error_response(StripeError(500, "api_error", "fakestripe failed: see its stderr"))
        response.headers.setdefault("Request-Id", request_id)
        return response

    def _match(self, method: str, path: str) -> tuple[Route | None, dict]:
        for route in self.routes:
            if route.method == method:
                match = route.pattern.match(path)
                if match:
                    return route, match.groupdict()
        return None, {}

    def _handle_api(self, request: Request, request_id: str) -> Response:
        route, args = self._match(request.method, request.path)
        pairs, params, parse_error = self._parse(request)
        call = _ApiRequest(
            request, request_id, route, args,
            key=request.header("Idempotency-Key") if request.method == "POST" else None,
            params=params, parse_error=parse_error,
            fingerprint=params if parse_error is None else sorted(pairs))
        with self.lock:
            self.store.expire_due_sessions()
            self.request_counts[route.key if route else "unrecognized"] += 1
            if route is not None and call.key is not None:
                self.idempotency_keys.setdefault(route.key, []).append(call.key)
        response = self._run(call)
        response.headers.setdefault("Stripe-Version", self.spec.api_version)
        if call.key is not None:
            response.headers.setdefault("Idempotency-Key", call.key)
        with self.lock:
            self.request_log.append({
                "id": request_id, "method": request.method, "path": request.path,
                "route": route.key if route else None,
                "headers": {k: v for k, v in request.headers.items() if k != "authorization"},
                "params": params if parse_error is None else pairs,
                "idempotency_key": call.key,
                "status": None if response.drop else response.status,
                "dropped": response.drop,
                "replayed": response.headers.get("Idempotent-Replayed") == "true",
            })
        return response

    @staticmethod
    def _parse(request: Request) -> tuple[list, dict | None, ParamError | None]:
        """Parameters from the query string, and for a POST from its form body."""
        pairs = parse_pairs(request.query)
        try:
            if request.method == "POST" and request.body:
                content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
                if content_type != FORM:
                    raise ParamError(f"Invalid request: the body must be {FORM}, "
                                     f"not {content_type or 'untyped'}", param=None)
                pairs += parse_pairs(request.body.decode("utf-8"))
            return pairs, nest(pairs), None
        except UnicodeDecodeError:
            return pairs, None, ParamError("Invalid request: the body is not UTF-8", param=None)
        except ParamError as error:
            return pairs, None, error

    def _run(self, call: _ApiRequest) -> Response:
        """Steps 1 to 5 of the module docstring."""
        request, route, key = call.request, call.route, call.key
        auth_error = self._authenticate(request.header("Authorization"))
        if auth_error is not None:
            with self.lock:
                self.auth_failures += 1
            return error_response(auth_error)
        if route is None:
            return error_response(StripeError(
                404, "invalid_request_error",
                f"Unrecognized request URL ({request.method}: {request.path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/."))
        with self.lock:
            fault = self.faults.take(route.key)
            if fault is not None:
                self.faults_injected += 1
        if fault is not None and fault.kind == "status":
            return error_response(fault.stripe_error())
        if fault is not None and fault.kind == "drop":
            return Response(0, drop=True)
        if key is not None:
            if len(key) > MAX_KEY_LENGTH:
                return self._refuse(ParamError(
                    f"Invalid Idempotency-Key: it must be at most {MAX_KEY_LENGTH} characters long",
                    param=None), call)
            with self.lock:
                try:
                    stored = self.idempotency.begin(self.api_key, key, call.endpoint,
                                                    call.fingerprint, self.now(), call.id)
                except StripeError as error:
                    return error_response(error)
                if stored is not None:
                    self.idempotent_replays += 1
            if stored is not None:
                # A replay suffers the route's scripted fault like any other request:
                # a slow Stripe is slow to replay too, and a connection can break after
                # a replayed answer as after a fresh one. (Serving the replay first
                # silently used the fault up.)
                if fault is not None and fault.kind == "delay":
                    time.sleep(fault.ms / 1000)
                replay = Response(stored.status, stored.body, drop=fault is not None
                                  and fault.kind == "apply_then_drop", headers={
                                      "Idempotent-Replayed": "true",
                                      "Original-Request": stored.request_id})
                return fault.apply_to(replay) if fault is not None else replay
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.ms / 1000)
        try:
            response = self._execute(call)
        except BaseException as error:
            # The endpoint never began (or the fake broke): the key stays free.
            if key is not None:
                with self.lock:
                    self.idempotency.release(self.api_key, key)
            if isinstance(error, ParamError):
                return self._refuse(error, call)
            raise
        if fault is not None and fault.kind == "apply_then_drop":
            response.drop = True
        return fault.apply_to(response) if fault is not None else response

    def _execute(self, call: _ApiRequest) -> Response:
        """Check the parameters, run the endpoint, store its answer under the key.

        Raises `ParamError` before anything was changed or stored.
        """
        if call.parse_error is not None:
            raise call.parse_error
        checked = self.spec.check(call.params, call.route.schema)
        with self.lock:
            handler = api.HANDLERS[call.route.key]
            try:
                response = Response.json(200, handler(api.Call(self.store, checked, call.args,
                                                               Origin(call.id, call.key))))
            except ParamError:
                raise
            except StripeError as error:
                response = error_response(error)
            if call.key is not None:
                self.idempotency.finish(self.api_key, call.key, response.status, response.body)
            return response

    def _refuse(self, error: ParamError, call: _ApiRequest) -> Response:
        with self.lock:
            self.param_failures.append({"route": call.route.key, "param": error.param,
                                        "message": error.message, "request_id": call.id})
        return error_response(error)

    def _authenticate(self, authorization: str | None) -> StripeError | None:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return StripeError(
                401, "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details.")
        key = key.strip()
        if key != self.api_key:
            return StripeError(401, "invalid_request_error", f"Invalid API Key provided: {mask(key)}")
        return None


@dataclass
class _ApiRequest:
    """A `/v1` request as the pipeline sees it."""

    request: Request
    id: str
    route: Route | None
    args: dict[str, str]
    key: str | None                 # the Idempotency-Key of a POST
    params: dict | None             # nested parameters; None if they could not be parsed
    parse_error: ParamError | None
    fingerprint: object             # what "same parameters" compares for the key

    @property
    def endpoint(self) -> str:
        return f"{self.request.method} {self.request.path}"


def mask(key: str) -> str:
    """Show a key the way Stripe does in errors: its prefix and last four characters."""
    if len(key) <= 12:
        return "*" * len(key)
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


def error_response(error: StripeError) -> Response:
    return Response.json(error.status, error.body(), headers=error.headers)
