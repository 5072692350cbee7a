"""Stripe's side of the world: sessions, payment intents, charges, refunds, events.

The store keeps every object in its API shape and changes it the way Stripe
would, recording an event (Stripe's shape, with a snapshot of the object)
for every change. It is not thread-safe by itself: the app calls it only
while holding its one lock.

Where the fake knowingly differs from Stripe:

- A completed subscription-mode session gets a ``payment_intent`` too, so
  the daemon can refund it the same way as a one-off payment (at Stripe the
  payment intent hangs off the subscription's invoice).
- Sessions, payment intents and charges are only what Checkout makes; the
  fake has no products, prices or customers of its own: a price id is any
  ``price_...`` (its amount is configurable), a customer any ``cus_...``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from .errors import StripeError, invalid_request, no_such
from .spec import ApiSpec
from .wire import new_id

# What a customer types into the payment page. The project's tests check
# that none of it reaches the daemon's logs or database.
CUSTOMER_DETAILS = {
    "address": {"city": "San Francisco", "country": "US", "line1": "510 Townsend St",
                "line2": None, "postal_code": "94103", "state": "CA"},
    "business_name": None,
    "email": "jenny.rosen@example.com",
    "individual_name": None,
    "name": "Jenny Rosen",
    "phone": "+14155550100",
    "tax_exempt": "none",
    "tax_ids": [],
}

DEFAULT_CONFIG = {
    "refund_status": "succeeded",        # or "pending": resolved later through /_fake
    "subscription_price_amount": 1000,   # unit amount of any price_... id
    "currency": "usd",                   # currency of any price_... id
}

SESSION_TTL_DEFAULT = 24 * 3600

# Session create parameters that Stripe echoes unchanged on the session.
_ECHOED = ("allow_promotion_codes", "billing_address_collection", "cancel_url", "client_reference_id",
           "customer", "customer_creation", "customer_email", "locale", "origin_context",
           "payment_method_collection", "redirect_on_completion", "return_url", "submit_type",
           "success_url")


@dataclass(frozen=True)
class Origin:
    """What caused a change, shown in its event's ``request`` field as Stripe does.

    API calls carry their request id and idempotency key; changes made
    "at Stripe" (the customer paying, the dashboard) carry neither.
    """

    request_id: str | None = None
    idempotency_key: str | None = None


AT_STRIPE = Origin()


@dataclass(frozen=True)
class LineItem:
    """One checked line of a session to create (see api.session_lines)."""

    description: str
    unit_amount: int
    quantity: int
    currency: str
    price: dict


class Store:
    def __init__(self, spec: ApiSpec, base_url: str, clock: Callable[[], int],
                 on_event: Callable[[dict], None] | None = None):
        self.spec = spec
        self.base_url = base_url
        self.now = clock
        self.on_event = on_event  # told of every event as it is emitted (webhook forwarding)
        self.config = dict(DEFAULT_CONFIG)
        self.sessions: dict[str, dict] = {}
        self.line_items: dict[str, list[dict]] = {}
        self.payment_intents: dict[str, dict] = {}
        self.charges: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.events: list[dict] = []  # oldest first
        # What a session's create call asked for its payment intent / subscription.
        self._session_requests: dict[str, dict] = {}

    # -- events --------------------------------------------------------------

    def emit(self, type_: str, obj: dict, origin: Origin, previous: dict | None = None) -> dict:
        event = self.spec.blank_object("event")
        # Only Connect and v2 events carry these; Stripe leaves them out otherwise.
        del event["account"], event["context"]
        data = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = previous
        event.update(id=new_id("evt_"), type=type_, created=self.now(), data=data,
                     api_version=self.spec.api_version, livemode=False, pending_webhooks=1,
                     request={"id": origin.request_id, "idempotency_key": origin.idempotency_key})
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def event(self, event_id: str) -> dict:
        for event in self.events:
            if event["id"] == event_id:
                return event
        raise no_such("event", event_id)

    # -- checkout sessions ---------------------------------------------------

    def create_session(self, params: dict, lines: list[LineItem], expires_at: int) -> dict:
        session_id = new_id("cs_test_", 58)
        total = sum(line.unit_amount * line.quantity for line in lines)
        session = self.spec.blank_object("checkout.session")
        session.update({name: params[name] for name in _ECHOED if name in params})
        session.update(
            id=session_id,
            created=self.now(),
            expires_at=expires_at,
            mode=params["mode"],
            status="open",
            payment_status="unpaid",
            amount_subtotal=total,
            amount_total=total,
            currency=lines[0].currency,
            metadata=params.get("metadata") or {},
            ui_mode=params.get("ui_mode", "hosted_page"),
            url=f"{self.base_url}/pay/{session_id}",
            client_secret=f"{session_id}_secret_{new_id('', 32)}",
            payment_method_types=params.get("allowed_payment_method_types", ["card"]),
            automatic_tax={"enabled": False, "liability": None, "provider": None, "status": None},
            custom_text={"after_submit": None, "shipping_address": None, "submit": None,
                         "terms_of_service_acceptance": None},
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        )
        self.sessions[session_id] = session
        self.line_items[session_id] = [self._line_item(line) for line in lines]
        self._session_requests[session_id] = {
            "payment_intent_metadata": params.get("payment_intent_data", {}).get("metadata", {}),
            "subscription_metadata": params.get("subscription_data", {}).get("metadata", {}),
        }
        return session

    @staticmethod
    def _line_item(line: LineItem) -> dict:
        amount = line.unit_amount * line.quantity
        return {"id": new_id("li_"), "object": "item", "amount_discount": 0, "amount_subtotal": amount,
                "amount_tax": 0, "amount_total": amount, "currency": line.currency,
                "description": line.description, "price": line.price, "quantity": line.quantity}

    def session(self, session_id: str) -> dict:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise no_such("checkout.session", session_id) from None

    def expire_session(self, session_id: str, origin: Origin) -> dict:
        session = self.session(session_id)
        if session["status"] != "open":
            raise invalid_request('Only Checkout Sessions with a status in ["open"] can be expired. '
                                  f"This Checkout Session has a status of `{session['status']}`.")
        session["status"] = "expired"
        self.emit("checkout.session.expired", session, origin)
        return session

    def expire_due_sessions(self) -> None:
        """Expire open sessions whose ``expires_at`` has passed, as Stripe does on its own."""
        now = self.now()
        for session in list(self.sessions.values()):
            if session["status"] == "open" and session["expires_at"] <= now:
                self.expire_session(session["id"], AT_STRIPE)

    def complete_session(self, session_id: str, paid: bool, method: str, late: bool = False,
                         no_payment_required: bool = False) -> dict:
        """The customer finishes the payment page: paid now, or (async methods) later.

        ``late`` lets an already expired session complete: the race in which a payment
        confirmed at Stripe just as the session expired, which a merchant must still handle.

        ``no_payment_required``: nothing is charged (a 100%-off promotion code, a free
        trial). As at Stripe, the session completes with ``payment_status``
        ``no_payment_required``, ``amount_total`` 0 (the whole subtotal shown as
        ``total_details.amount_discount``) and no payment intent; a subscription is
        ``trialing``.
        """
        session = self.session(session_id)
        if session["status"] != "open" and not (late and session["status"] == "expired"):
            raise StripeError(409, "invalid_request_error",
                              f"Checkout Session {session_id} is {session['status']}, not open")
        requested = self._session_requests[session_id]
        if session["mode"] == "subscription" and session["customer"] is None:
            session["customer"] = new_id("cus_", 14)
        if no_payment_required:
            self._discount_everything(session)
            session.update(status="complete", payment_status="no_payment_required", payment_intent=None,
                           customer_details=copy.deepcopy(CUSTOMER_DETAILS))
        else:
            intent = self._create_payment_intent(session, paid, method, requested["payment_intent_metadata"])
            session.update(status="complete", payment_status="paid" if paid else "unpaid",
                           payment_intent=intent["id"], customer_details=copy.deepcopy(CUSTOMER_DETAILS))
        if session["mode"] == "subscription":
            subscription = self._create_subscription(session, paid, requested["subscription_metadata"],
                                                     trialing=no_payment_required)
            self.emit("customer.subscription.created", subscription, AT_STRIPE)
        self.emit("checkout.session.completed", session, AT_STRIPE)
        return session

    def settle_async_payment(self, session_id: str, succeeded: bool) -> dict:
        """A delayed payment method (SEPA debit, ...) finally succeeds or fails."""
        session = self.session(session_id)
        intent = self.payment_intents.get(session["payment_intent"] or "")
        if session["status"] != "complete" or intent is None or intent["status"] != "processing":
            raise StripeError(409, "invalid_request_error",
                              f"Checkout Session {session_id} has no payment awaiting its result")
        charge = self.charges[intent["latest_charge"]]
        if succeeded:
            intent.update(status="succeeded", amount_received=intent["amount"])
            charge.update(status="succeeded", paid=True, captured=True, amount_captured=charge["amount"])
            session["payment_status"] = "paid"
            if session["subscription"]:
                self.subscriptions[session["subscription"]]["status"] = "active"
            self.emit("checkout.session.async_payment_succeeded", session, AT_STRIPE)
        else:
            intent.update(status="requires_payment_method",
                          last_payment_error={"code": "payment_method_provider_decline",
                                              "message": "The payment was declined.",
                                              "type": "card_error"})
            charge.update(status="failed", failure_code="payment_method_provider_decline")
            self.emit("checkout.session.async_payment_failed", session, AT_STRIPE)
        return session

    def _create_payment_intent(self, session: dict, paid: bool, method: str, metadata: dict) -> dict:
        intent_id = new_id("pi_")
        charge_id = new_id("ch_")
        amount = session["amount_total"]
        intent = self.spec.blank_object("payment_intent")
        intent.update(
            id=intent_id, amount=amount, amount_received=amount if paid else 0,
            currency=session["currency"], created=self.now(), customer=session["customer"],
            status="succeeded" if paid else "processing",
            client_secret=f"{intent_id}_secret_{new_id('', 25)}",
            capture_method="automatic_async", confirmation_method="automatic",
            latest_charge=charge_id, payment_method=new_id("pm_"), payment_method_types=[method],
            metadata=dict(metadata),
        )
        self.payment_intents[intent_id] = intent
        self.charges[charge_id] = {
            "id": charge_id, "object": "charge", "amount": amount,
            "amount_captured": amount if paid else 0, "amount_refunded": 0,
            "billing_details": {key: copy.deepcopy(CUSTOMER_DETAILS[key])
                                for key in ("address", "email", "name", "phone")},
            "captured": paid, "created": self.now(), "currency": session["currency"],
            "customer": session["customer"], "failure_code": None, "livemode": False, "metadata": {},
            "paid": paid, "payment_intent": intent_id, "payment_method": intent["payment_method"],
            "refunded": False, "refunds": self._list_of([], f"/v1/charges/{charge_id}/refunds"),
            "status": "succeeded" if paid else "pending",
        }
        return intent

    def _discount_everything(self, session: dict) -> None:
        """A 100%-off code: every line and the session total come to 0."""
        for line in self.line_items[session["id"]]:
            line.update(amount_discount=line["amount_subtotal"], amount_total=0)
        session["total_details"] = dict(session["total_details"] or {},
                                        amount_discount=session["amount_subtotal"])
        session["amount_total"] = 0

    def _create_subscription(self, session: dict, paid: bool, metadata: dict,
                             trialing: bool = False) -> dict:
        subscription_id = new_id("sub_")
        items = [{"id": new_id("si_", 14), "object": "subscription_item", "price": item["price"],
                  "quantity": item["quantity"]} for item in self.line_items[session["id"]]]
        subscription = {
            "id": subscription_id, "object": "subscription", "created": self.now(),
            "currency": session["currency"], "customer": session["customer"],
            "items": self._list_of(items, f"/v1/subscription_items?subscription={subscription_id}"),
            "latest_invoice": new_id("in_"), "livemode": False, "metadata": dict(metadata),
            "status": "trialing" if trialing else "active" if paid else "incomplete",
        }
        self.subscriptions[subscription_id] = subscription
        session.update(subscription=subscription_id, invoice=subscription["latest_invoice"])
        return subscription

    @staticmethod
    def _list_of(data: list, url: str) -> dict:
        return {"object": "list", "data": data, "has_more": False, "url": url}

    # -- payment intents and refunds -----------------------------------------

    def payment_intent(self, intent_id: str, *, param: str | None = None) -> dict:
        try:
            return self.payment_intents[intent_id]
        except KeyError:
            raise no_such("payment_intent", intent_id, param=param) from None

    def charge(self, charge_id: str, *, param: str | None = None) -> dict:
        try:
            return self.charges[charge_id]
        except KeyError:
            raise no_such("charge", charge_id, param=param) from None

    def refund(self, refund_id: str) -> dict:
        try:
            return self.refunds[refund_id]
        except KeyError:
            raise no_such("refund", refund_id) from None

    def create_refund(self, intent: dict, amount: int | None, reason: str | None, metadata: dict,
                      origin: Origin) -> dict:
        """Refund ``amount`` (default: all that remains) of a succeeded payment intent."""
        if intent["status"] != "succeeded":
            raise invalid_request(f"This PaymentIntent ({intent['id']}) does not have a successful "
                                  "charge to refund.")
        charge = self.charges[intent["latest_charge"]]
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining == 0:
            raise invalid_request(f"Charge {charge['id']} has already been refunded.",
                                  code="charge_already_refunded")
        if amount is None:
            amount = remaining
        if amount > remaining:
            raise invalid_request(f"Refund amount ({amount}) is greater than unrefunded amount on "
                                  f"charge ({remaining})", param="amount")
        status = self.config["refund_status"]
        refund = self.spec.blank_object("refund")
        refund.update(
            id=new_id("re_"), amount=amount, charge=charge["id"], created=self.now(),
            currency=charge["currency"], metadata=dict(metadata), payment_intent=intent["id"],
            reason=reason, status=status, balance_transaction=new_id("txn_"),
            pending_reason="processing" if status == "pending" else None,
        )
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        self._sync_charge(charge)
        self.emit("refund.created", refund, origin)
        self.emit("charge.refunded", charge, origin)
        return refund

    def resolve_refund(self, refund_id: str, status: str, failure_reason: str | None) -> dict:
        """A pending refund reaches its end: ``succeeded``, or ``failed`` (money stays paid)."""
        refund = self.refund(refund_id)
        if refund["status"] != "pending":
            raise StripeError(409, "invalid_request_error",
                              f"Refund {refund_id} is {refund['status']}, not pending")
        refund.update(status=status, pending_reason=None)
        if status == "failed":
            refund["failure_reason"] = failure_reason or "unknown"
            charge = self.charges[refund["charge"]]
            charge["amount_refunded"] -= refund["amount"]
            self._sync_charge(charge)
        self.emit("refund.updated", refund, AT_STRIPE, previous={"status": "pending"})
        if status == "failed":
            self.emit("refund.failed", refund, AT_STRIPE)
        return refund

    def _sync_charge(self, charge: dict) -> None:
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refunds = [r for r in reversed(self.refunds.values()) if r["charge"] == charge["id"]]
        charge["refunds"] = self._list_of(copy.deepcopy(refunds), f"/v1/charges/{charge['id']}/refunds")
