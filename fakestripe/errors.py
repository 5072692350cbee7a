"""Stripe's error shape, as exceptions the rest of the fake raises.

Every error the fake answers on a `/v1` route has Stripe's body,
``{"error": {"type": ..., "code": ..., "message": ..., "param": ...}}``,
with keys left out when Stripe would leave them out.

The fake only sends an error ``code`` that Stripe itself documents
(``parameter_unknown``, ``parameter_missing``, ``resource_missing``, ...).
Where Stripe answers without a code (a bad enum value, a session that is not
open) the fake sends none either: a code invented here would be something
the daemon could come to rely on and then not find at the real Stripe.
"""

from __future__ import annotations


class StripeError(Exception):
    """An error answer of the Stripe API."""

    def __init__(self, status: int, type_: str, message: str, *, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict:
        error = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


class ParamError(StripeError):
    """A request refused for its shape alone, before anything was looked up.

    These are the failures of the parameter check that the counters report
    (``param_check_failures``): unknown or mistyped parameters, missing
    required ones, values out of Stripe's allowed range. Following Stripe,
    the answer to such a request is not stored under its idempotency key.
    """

    def __init__(self, message: str, *, param: str | None, code: str | None = None):
        super().__init__(400, "invalid_request_error", message, code=code, param=param)


def invalid_request(message: str, *, param: str | None = None, code: str | None = None,
                    status: int = 400) -> StripeError:
    """A refusal that depends on state (a refund too large, a closed session)."""
    return StripeError(status, "invalid_request_error", message, code=code, param=param)


def no_such(kind: str, object_id: str, *, param: str | None = None) -> StripeError:
    """Stripe's answer for an id it does not know: 404 for a path, 400 for a parameter."""
    return StripeError(404 if param is None else 400, "invalid_request_error",
                       f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def unknown_param(name: str) -> ParamError:
    return ParamError(f"Received unknown parameter: {name}", param=name, code="parameter_unknown")


def missing_param(name: str) -> ParamError:
    return ParamError(f"Missing required param: {name}.", param=name, code="parameter_missing")
