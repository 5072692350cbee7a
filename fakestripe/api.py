"""The `/v1` endpoints: from checked parameters to store changes and Stripe's answers.

Each handler gets its parameters already checked against the endpoint's
schema and typed. What it refuses as a `ParamError` (request shape: a
missing ``mode``, an ``expires_at`` out of range) it refuses before
touching anything; what depends on state (an unknown id, a refund larger
than what remains) is a plain `StripeError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from .errors import ParamError, missing_param, no_such
from .store import SESSION_TTL_DEFAULT, LineItem, Origin, Store
from .wire import new_id

LIST_LIMIT_DEFAULT = 10
LIST_LIMIT_MAX = 100
EXPIRES_AT_MIN = 30 * 60
EXPIRES_AT_MAX = 24 * 3600

# What `expand[]` may name on each object (on lists, prefixed with "data.").
EXPANDABLE = {
    "checkout.session": ("line_items", "payment_intent"),
    "payment_intent": ("latest_charge",),
    "refund": ("charge", "payment_intent"),
    "event": (),
}


@dataclass
class Call:
    store: Store
    params: dict
    args: dict[str, str]  # path parameters
    origin: Origin


HANDLERS: dict[str, Callable[[Call], dict]] = {}


def endpoint(key: str):
    def register(handler):
        HANDLERS[key] = handler
        return handler
    return register


# -- checkout sessions -------------------------------------------------------

@endpoint("POST /v1/checkout/sessions")
def create_session(call: Call) -> dict:
    params, store = call.params, call.store
    expand = _expand(params, "checkout.session")
    mode = params.get("mode")
    if mode is None:
        raise missing_param("mode")
    if mode == "setup":
        raise ParamError("fakestripe does not simulate setup mode", param="mode")
    if "customer" in params and "customer_email" in params:
        raise ParamError("You may only specify one of these parameters: customer, customer_email.",
                         param="customer_email")
    lines = session_lines(params.get("line_items"), mode, store.config)
    now = store.now()
    expires_at = params.get("expires_at", now + SESSION_TTL_DEFAULT)
    if expires_at - now < EXPIRES_AT_MIN:
        raise ParamError("The `expires_at` timestamp must be at least 30 minutes from Checkout "
                         "Session creation.", param="expires_at")
    if expires_at - now > EXPIRES_AT_MAX:
        raise ParamError("The `expires_at` timestamp must be less than 24 hours from Checkout "
                         "Session creation.", param="expires_at")
    customer = params.get("customer")
    if customer is not None and not customer.startswith("cus_"):
        raise no_such("customer", customer, param="customer")
    return _session(store, store.create_session(params, lines, expires_at), expand)


def session_lines(items: list | None, mode: str, config: dict) -> list[LineItem]:
    """Check line items the way Checkout does and price them."""
    if not items:
        raise missing_param("line_items")
    lines = [_line(item, f"line_items[{i}]", mode, config) for i, item in enumerate(items)]
    if len({line.currency for line in lines}) > 1:
        raise ParamError("All line items must have the same currency.", param="line_items")
    if mode == "subscription" and not any(line.price["recurring"] for line in lines):
        raise ParamError("You must provide at least one recurring price in `subscription` mode "
                         "when using prices.", param="line_items")
    return lines


def _line(item: dict, name: str, mode: str, config: dict) -> LineItem:
    if ("price" in item) == ("price_data" in item):
        raise ParamError("You must specify either `price` or `price_data` (but not both).", param=name)
    quantity = item.get("quantity")
    if quantity is None:
        raise missing_param(f"{name}[quantity]")
    if quantity < 1:
        raise ParamError("This value must be greater than or equal to 1.", param=f"{name}[quantity]")
    if "price" in item:
        # The fake keeps no prices: any price_... is a recurring price in
        # subscription mode, a one-time price otherwise.
        price_id = item["price"]
        if not price_id.startswith("price_"):
            raise no_such("price", price_id, param=f"{name}[price]")
        recurring = {"interval": "month", "interval_count": 1} if mode == "subscription" else None
        unit, currency = config["subscription_price_amount"], config["currency"]
        product, description = "prod_fake", f"Price {price_id}"
    else:
        data = item["price_data"]
        price_id = new_id("price_")
        if "product" not in data and "product_data" not in data:
            raise ParamError("You must specify either `product` or `product_data`.",
                             param=f"{name}[price_data]")
        if "unit_amount" in data:
            unit = data["unit_amount"]
        elif "unit_amount_decimal" in data:
            unit = int(Decimal(data["unit_amount_decimal"]).to_integral_value())
        else:
            raise missing_param(f"{name}[price_data][unit_amount]")
        if unit < 0:
            raise ParamError("This value must be greater than or equal to 0.",
                             param=f"{name}[price_data][unit_amount]")
        recurring = data.get("recurring")
        if recurring is not None and mode == "payment":
            raise ParamError("You specified `payment` mode but passed a recurring price. Either "
                             "switch to `subscription` mode or use only one-time prices.",
                             param=f"{name}[price_data][recurring]")
        currency = data["currency"]
        product = data.get("product") or new_id("prod_", 14)
        description = data.get("product_data", {}).get("name", product)
    currency = currency.lower()
    price = {"id": price_id, "object": "price", "currency": currency, "product": product,
             "recurring": recurring, "type": "recurring" if recurring else "one_time",
             "unit_amount": unit}
    return LineItem(description, unit, quantity, currency, price)


@endpoint("GET /v1/checkout/sessions/{session}")
def retrieve_session(call: Call) -> dict:
    expand = _expand(call.params, "checkout.session")
    return _session(call.store, call.store.session(call.args["session"]), expand)


@endpoint("GET /v1/checkout/sessions")
def list_sessions(call: Call) -> dict:
    params, store = call.params, call.store
    expand = _expand(params, "checkout.session", listed=True)
    email = params.get("customer_details", {}).get("email")

    def wanted(s: dict) -> bool:
        return (all(params[f] == s[f] for f in ("status", "customer", "payment_intent", "subscription",
                                                 "payment_link", "customer_account") if f in params)
                and (email is None or (s["customer_details"] or {}).get("email") == email)
                and _created_matches(s["created"], params.get("created")))

    return _page(list(reversed(store.sessions.values())), wanted, params, "/v1/checkout/sessions",
                 "checkout.session", lambda s: _session(store, s, expand))


@endpoint("POST /v1/checkout/sessions/{session}/expire")
def expire_session(call: Call) -> dict:
    expand = _expand(call.params, "checkout.session")
    return _session(call.store, call.store.expire_session(call.args["session"], call.origin), expand)


def _session(store: Store, session: dict, expand: tuple) -> dict:
    shown = dict(session)
    if "line_items" in expand:
        shown["line_items"] = {"object": "list", "data": store.line_items[session["id"]],
                               "has_more": False,
                               "url": f"/v1/checkout/sessions/{session['id']}/line_items"}
    if "payment_intent" in expand and session["payment_intent"]:
        shown["payment_intent"] = store.payment_intents[session["payment_intent"]]
    return shown


# -- payment intents ---------------------------------------------------------

@endpoint("GET /v1/payment_intents/{intent}")
def retrieve_payment_intent(call: Call) -> dict:
    expand = _expand(call.params, "payment_intent")
    intent = dict(call.store.payment_intent(call.args["intent"]))
    if "latest_charge" in expand:
        intent["latest_charge"] = call.store.charges[intent["latest_charge"]]
    return intent


# -- refunds -----------------------------------------------------------------

@endpoint("POST /v1/refunds")
def create_refund(call: Call) -> dict:
    params, store = call.params, call.store
    expand = _expand(params, "refund")
    if "payment_intent" not in params and "charge" not in params:
        raise ParamError("One of the following params should be provided for this URL: "
                         "charge, payment_intent.", param=None, code="parameter_missing")
    amount = params.get("amount")
    if amount is not None and amount < 1:
        raise ParamError(f"Invalid positive integer: {amount}", param="amount",
                         code="parameter_invalid_integer")
    if "payment_intent" in params:
        intent = store.payment_intent(params["payment_intent"], param="payment_intent")
    else:
        charge = store.charge(params["charge"], param="charge")
        intent = store.payment_intents[charge["payment_intent"]]
    refund = store.create_refund(intent, amount, params.get("reason"), params.get("metadata") or {},
                                 call.origin)
    return _refund(store, refund, expand)


@endpoint("GET /v1/refunds/{refund}")
def retrieve_refund(call: Call) -> dict:
    expand = _expand(call.params, "refund")
    return _refund(call.store, call.store.refund(call.args["refund"]), expand)


@endpoint("GET /v1/refunds")
def list_refunds(call: Call) -> dict:
    params, store = call.params, call.store
    expand = _expand(params, "refund", listed=True)

    def wanted(r: dict) -> bool:
        return (all(params[f] == r[f] for f in ("payment_intent", "charge") if f in params)
                and _created_matches(r["created"], params.get("created")))

    return _page(list(reversed(store.refunds.values())), wanted, params, "/v1/refunds", "refund",
                 lambda r: _refund(store, r, expand))


def _refund(store: Store, refund: dict, expand: tuple) -> dict:
    shown = dict(refund)
    if "payment_intent" in expand:
        shown["payment_intent"] = store.payment_intents[refund["payment_intent"]]
    if "charge" in expand:
        shown["charge"] = store.charges[refund["charge"]]
    return shown


# -- events ------------------------------------------------------------------

@endpoint("GET /v1/events/{id}")
def retrieve_event(call: Call) -> dict:
    _expand(call.params, "event")
    return call.store.event(call.args["id"])


@endpoint("GET /v1/events")
def list_events(call: Call) -> dict:
    params = call.params
    _expand(params, "event", listed=True)
    type_pattern = _type_pattern(params.get("type"))
    types = params.get("types")

    def wanted(e: dict) -> bool:
        return ((type_pattern is None or type_pattern.fullmatch(e["type"]) is not None)
                and (types is None or e["type"] in types)
                and _created_matches(e["created"], params.get("created")))

    return _page(list(reversed(call.store.events)), wanted, params, "/v1/events", "event",
                 lambda e: e)


def _type_pattern(type_: str | None) -> re.Pattern | None:
    """Stripe's ``type`` filter: an event type, where ``*`` matches anything."""
    if type_ is None:
        return None
    return re.compile(".*".join(re.escape(part) for part in type_.split("*")))


# -- lists and expansion -----------------------------------------------------

def _expand(params: dict, kind: str, *, listed: bool = False) -> tuple:
    """The fields to expand; one the fake cannot expand is refused."""
    fields = []
    for path in params.get("expand", []):
        field = path[len("data."):] if listed and path.startswith("data.") else path
        if field not in EXPANDABLE[kind] or (listed and field == path):
            raise ParamError(f"This property cannot be expanded ({path}). fakestripe expands: "
                             f"{', '.join(EXPANDABLE[kind]) or 'nothing'}"
                             f"{' (prefixed with data.)' if listed else ''}.", param="expand")
        fields.append(field)
    return tuple(fields)


def _created_matches(created: int, condition) -> bool:
    if condition is None:
        return True
    if isinstance(condition, int):
        return created == condition
    return (created > condition.get("gt", created - 1) and created >= condition.get("gte", created)
            and created < condition.get("lt", created + 1) and created <= condition.get("lte", created))


def _page(newest_first: list[dict], wanted: Callable[[dict], bool], params: dict, url: str,
          kind: str, show: Callable[[dict], dict]) -> dict:
    """One page of the ``wanted`` objects, newest first, with Stripe's cursors.

    A cursor is any object of the list's kind, whether or not the filters
    keep it, as at Stripe.
    """
    limit = params.get("limit", LIST_LIMIT_DEFAULT)
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ParamError(f"Invalid limit: must be between 1 and {LIST_LIMIT_MAX}", param="limit")
    ids = [item["id"] for item in newest_first]
    backwards = False
    if "starting_after" in params:
        newest_first = newest_first[_position(ids, params["starting_after"], kind, "starting_after") + 1:]
    elif "ending_before" in params:
        newest_first = newest_first[:_position(ids, params["ending_before"], kind, "ending_before")]
        backwards = True
    rest = [item for item in newest_first if wanted(item)]
    page = rest[-limit:] if backwards else rest[:limit]
    has_more = len(rest) > limit
    return {"object": "list", "data": [show(item) for item in page], "has_more": has_more, "url": url}


def _position(ids: list[str], cursor: str, kind: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise no_such(kind, cursor, param=param) from None
