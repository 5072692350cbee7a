"""Guarantee 11: no personal data or secrets in logs, errors, metrics or the database.

The fake's sessions carry a client_secret from creation and, once the
customer completed the payment page, customer_details (e-mail, name,
address, phone). After checkouts that make the daemon read such sessions
(a REPLACE of a paid checkout retrieves it), none of that, nor the Stripe
secret key or the webhook secret, may appear in the daemon's stderr/stdout
(at PAYMENTSD_LOG_LEVEL=debug), in any answer it gave, in Metrics, or
anywhere in the bytes of the SQLite file and its -wal/-shm files.
"""

from __future__ import annotations

import signal

import pytest

import checkout_support as cs
import paymentsd_harness as h
from checkout_support import checkout_request, item

@pytest.mark.test_timeout(120)
def test_no_personal_data_or_secrets_anywhere(pay_daemon, fake_stripe, pb):
    d = pay_daemon(env={"PAYMENTSD_LOG_LEVEL": "debug",
                        "PAYMENTSD_JANITOR_INTERVAL": "1"})
    c = d.client(timeout=45)
    answers: list = []  # every Status and payload the daemon sent back

    def call(method, msg, **kw):
        status, payload = c.call(method, msg, **kw)
        answers.append((method, status, payload))
        return status, payload

    cs.set_stock(c, "tee", 50)
    # A checkout the customer pays, then a REPLACE that makes the daemon look at it.
    s, p = call("CreateCheckout", checkout_request("deal-priv-1", [item("tee", 1, 2500)],
                                                   customer_ref="cust_9"))
    assert s.code == pb.OK, h.describe_status(s)
    paid = pb.Payment.FromString(p)
    fake_stripe.complete_session(paid.checkout_session_id, paid=True)
    s, _ = call("CreateCheckout", checkout_request("deal-priv-1", [item("tee", 2, 2500)],
                                                   on_open=pb.ON_OPEN_REPLACE))
    assert s.reason == "already_paid", f"REPLACE of a paid checkout: {h.describe_status(s)}"
    # An open one, one completed without payment (async method), a rejected one,
    # one that goes through a dropped answer.
    for deal in ("deal-priv-2", "deal-priv-3"):
        s, p = call("CreateCheckout", checkout_request(deal, [item("tee", 1, 1000)]))
        assert s.code == pb.OK, h.describe_status(s)
    fake_stripe.complete_session(pb.Payment.FromString(p).checkout_session_id, paid=False)
    call("CreateCheckout", checkout_request("deal-priv-3", [item("tee", 1, 1000)],
                                            on_open=pb.ON_OPEN_REPLACE))
    fake_stripe.add_fault(kind="status", status=400, times=1,
                          error={"code": "parameter_invalid_integer", "message": "bad"})
    call("CreateCheckout", checkout_request("deal-priv-4", [item("tee", 1, 1000)]))
    fake_stripe.add_fault(kind="apply_then_drop", times=1)
    call("CreateCheckout", checkout_request("deal-priv-5", [item("tee", 1, 1000)]))
    for deal in ("deal-priv-1", "deal-priv-2", "deal-priv-3", "deal-priv-4", "deal-priv-5"):
        call("GetPayment", pb.PaymentRef(deal_id=deal))
        call("ListPayments", pb.PaymentRef(deal_id=deal))
        call("ListEvents", pb.PaymentRef(deal_id=deal))
    call("Reconcile", pb.ReconcileRequest())
    _, mp = call("Metrics", pb.MetricsRequest())

    # What the fake Stripe actually holds: the client secrets it generated.
    sessions = fake_stripe.sessions()
    secrets = sorted({s["client_secret"] for s in sessions if s.get("client_secret")})
    assert secrets, "the fake generated no client_secret (test setup)"
    assert any(s.get("customer_details") for s in sessions), (
        "no session at the fake has customer_details (test setup)")
    needles = [*cs.CUSTOMER_PII, cs.PHONE, *secrets, *h.SECRETS]

    hits = []
    for method, status, payload in answers:
        hits += cs.leaks(needles, f"the {method} answer's status", status.SerializeToString())
        hits += cs.leaks(needles, f"the {method} answer's payload", payload)
    running_db = cs.db_files(d)
    for path, data in running_db.items():
        hits += cs.leaks(needles, f"{path} (daemon running)", data)

    rc = d.stop(signal.SIGTERM)
    assert rc == 0, f"SIGTERM stop exited {rc}"
    files = cs.db_files(d)
    assert d.db_path in files, f"no database file at {d.db_path}"
    for path, data in files.items():
        hits += cs.leaks(needles, f"{path} (after SIGTERM)", data)
    hits += cs.leaks(needles, "stderr", d.stderr_text().encode())
    hits += cs.leaks(needles, "stdout", d.stdout_text().encode())
    assert not hits, "personal data or secrets leaked:\n  " + "\n  ".join(sorted(set(hits)))
    h.assert_clean_stderr(d, extra_secrets=secrets)
    # The database does hold the checkouts (the search above looked at real data).
    assert paid.payment_id.encode() in b"".join(files.values()) or \
        paid.payment_id.encode() in b"".join(running_db.values()), (
            "the payment id is not in the database files: the search looked at the wrong files")
