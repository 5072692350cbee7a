"""Scripted faults: what the next requests on a route suffer instead of a clean answer.

A fault names a route by its template (``POST /v1/checkout/sessions/{id}/expire``;
the placeholder's name does not matter) and affects the next ``times``
requests on it (default 1). Faults on one route are used in the order they
were scripted. Kinds:

- ``status``: answer ``status`` with Stripe's error body for it (``api_error``
  for 5xx, ``rate_limit`` for 429, ``idempotency_key_in_use`` for 409) plus
  optional ``headers`` (e.g. ``{"Stripe-Should-Retry": "false"}``) and an
  optional ``error`` object replacing the body's; nothing is applied.
- ``delay``: wait ``ms`` milliseconds (after claiming the idempotency key,
  as a slow Stripe would), then handle the request normally.
- ``apply_then_drop``: handle the request fully, store its answer under its
  idempotency key, then close the connection without answering.

A request answered from the idempotency store (a replay) suffers a ``delay``
or ``apply_then_drop`` fault too: it waits, or its replayed answer is
dropped. The fault is never used up without an effect.
- ``drop``: close the connection without answering and without applying.
- ``omit_fields``: handle the request normally (its full answer is what the
  idempotency store keeps), but send the answer with the top-level JSON
  ``fields`` removed: a malformed answer from Stripe, which a retry with the
  same key gets whole.

Not thread-safe by itself: the app calls it under its one lock.
"""

from __future__ import annotations

import json

from dataclasses import dataclass, field

from .errors import StripeError
from .spec import normalize_route_key

KINDS = ("status", "delay", "apply_then_drop", "drop", "omit_fields")


class FaultSpecError(ValueError):
    """A fault that cannot be scripted as given."""


@dataclass
class Fault:
    route: str
    kind: str
    times: int = 1
    status: int | None = None
    ms: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    error: dict | None = None
    fields: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {k: v for k, v in vars(self).items() if v not in (None, {}, [])}

    def apply_to(self, response):
        """An ``omit_fields`` fault's change to the answer sent (never to the one stored)."""
        if self.kind != "omit_fields" or not response.body:
            return response
        obj = json.loads(response.body)
        if isinstance(obj, dict):
            for name in self.fields:
                obj.pop(name, None)
        return type(response)(response.status, json.dumps(obj).encode(), response.content_type,
                              dict(response.headers), response.drop)

    def stripe_error(self) -> StripeError:
        """The answer of a ``status`` fault."""
        if self.status == 429:
            type_, code, message = ("invalid_request_error", "rate_limit",
                                    "Too many requests hit the API too quickly. We recommend an "
                                    "exponential backoff of your requests.")
        elif self.status == 409:
            type_, code, message = ("idempotency_error", "idempotency_key_in_use",
                                    "There is currently another in-progress request using this "
                                    "Idempotent Key. Please try again later.")
        elif self.status >= 500:
            type_, code, message = ("api_error", None,
                                    "An unknown error occurred. Please try again later.")
        else:
            type_, code, message = "invalid_request_error", None, "Scripted fault."
        error = StripeError(self.status, type_, message, code=code, headers=self.headers)
        if self.error is not None:
            error.type = self.error.get("type", error.type)
            error.code = self.error.get("code", error.code)
            error.message = self.error.get("message", error.message)
            error.param = self.error.get("param")
        return error


class FaultScript:
    def __init__(self, route_keys):
        self._routes = {normalize_route_key(key): key for key in route_keys}
        self._pending: list[Fault] = []

    def add(self, spec: dict) -> Fault:
        """Script a fault from its JSON description; raises FaultSpecError if it is wrong."""
        route = self._routes.get(normalize_route_key(str(spec.get("route", ""))))
        if route is None:
            raise FaultSpecError(f"unknown route {spec.get('route')!r}; "
                                 f"routes: {sorted(self._routes.values())}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FaultSpecError(f"kind must be one of {', '.join(KINDS)}")
        unknown = set(spec) - {"route", "kind", "times", "status", "ms", "headers", "error", "fields"}
        if unknown:
            raise FaultSpecError(f"unknown fault fields: {sorted(unknown)}")
        times = spec.get("times", 1)
        if not isinstance(times, int) or times < 1:
            raise FaultSpecError("times must be a positive integer")
        status = spec.get("status")
        if kind == "status" and not (isinstance(status, int) and 400 <= status <= 599):
            raise FaultSpecError("a status fault needs an integer status between 400 and 599")
        ms = spec.get("ms", 0)
        if kind == "delay" and not (isinstance(ms, int) and ms >= 0):
            raise FaultSpecError("a delay fault needs ms, a non-negative integer")
        headers = spec.get("headers", {})
        if not isinstance(headers, dict):
            raise FaultSpecError("headers must be an object")
        if not isinstance(spec.get("error", {}), dict):
            raise FaultSpecError("error must be an object (type, code, message, param)")
        fields = spec.get("fields", [])
        if kind == "omit_fields" and not (isinstance(fields, list) and fields
                                          and all(isinstance(f, str) for f in fields)):
            raise FaultSpecError("an omit_fields fault needs fields, a non-empty list of names")
        fault = Fault(route, kind, times, status if kind == "status" else None, ms,
                      {str(k): str(v) for k, v in headers.items()}, spec.get("error"), list(fields))
        self._pending.append(fault)
        return fault

    def take(self, route: str) -> Fault | None:
        """The fault the next request on ``route`` suffers, used up by one."""
        for fault in self._pending:
            if fault.route == route:
                fault.times -= 1
                if fault.times == 0:
                    self._pending.remove(fault)
                return fault
        return None

    def pending(self) -> list[dict]:
        return [fault.as_json() for fault in self._pending]

    def clear(self) -> None:
        self._pending.clear()
