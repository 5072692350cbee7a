"""The hosted payment page a session's ``url`` points to, for people trying the project by hand.

``GET /pay/{id}`` shows the session; its "Pay" button completes it as a
paid card payment (like ``POST /_fake/sessions/{id}/complete``) and
redirects to ``success_url``; "Back" redirects to ``cancel_url`` and, as at
Stripe, leaves the session open.
"""

from __future__ import annotations

import html
import re

from .errors import StripeError
from .formcodec import parse_pairs
from .wire import Request, Response

_PATH = re.compile(r"/pay/(?P<session_id>[^/]+)\Z")


def handle(app, request: Request) -> Response:
    match = _PATH.match(request.path)
    if match is None or request.method not in ("GET", "POST"):
        return _page(404, "Not found", "<p>No such page.</p>")
    with app.lock:
        app.store.expire_due_sessions()
        try:
            session = app.store.session(match["session_id"])
        except StripeError:
            return _page(404, "Not found", "<p>No such Checkout Session.</p>")
        if request.method == "GET":
            return _show(session, app.store.line_items[session["id"]])
        action = dict(parse_pairs(request.body.decode("utf-8", "replace"))).get("action")
        if action == "pay" and session["status"] == "open":
            app.store.complete_session(session["id"], paid=True, method="card")
            target = session["success_url"]
        else:
            target = session["cancel_url"]
    if not target:
        return _page(200, "Done", f"<p>Checkout Session is {html.escape(session['status'])}.</p>")
    return Response(303, content_type="text/plain",
                    headers={"Location": target.replace("{CHECKOUT_SESSION_ID}", session["id"])})


def _show(session: dict, line_items: list[dict]) -> Response:
    rows = "".join(
        f"<tr><td>{html.escape(item['description'])}</td><td>{item['quantity']}</td>"
        f"<td>{_money(item['amount_total'], item['currency'])}</td></tr>" for item in line_items)
    buttons = ('<button name="action" value="pay">Pay</button> '
               if session["status"] == "open" else "")
    body = (f"<p>Status: {html.escape(session['status'])}, "
            f"{html.escape(session['payment_status'])}</p>"
            f"<table><tr><th>Item</th><th>Qty</th><th>Amount</th></tr>{rows}</table>"
            f"<p>Total: {_money(session['amount_total'], session['currency'])}</p>"
            f'<form method="post">{buttons}<button name="action" value="back">Back</button></form>')
    return _page(200, "fakestripe checkout", body)


def _money(amount: int, currency: str) -> str:
    return f"{amount / 100:.2f} {html.escape(currency.upper())}"


def _page(status: int, title: str, body: str) -> Response:
    document = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>"
                f"<body><h1>{title}</h1>{body}</body></html>")
    return Response(status, document.encode(), content_type="text/html; charset=utf-8")
