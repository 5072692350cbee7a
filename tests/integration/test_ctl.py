"""paymentsctl, the operator's CLI, against the real daemon: exit status 0
only on OK, shared options before or after the subcommand, --json for scripts."""
import json
import subprocess

import paymentsd_harness as h

CTL = h.REPO_ROOT / ".build" / "debug" / "paymentsctl"


def ctl(*args, env=None):
    return subprocess.run([str(CTL), *args], capture_output=True, text=True, timeout=30, env=env)


def test_health_with_options_on_either_side(daemon):
    for args in (["--socket", daemon.socket_path, "health"], ["health", "--socket", daemon.socket_path],
                 [f"--socket={daemon.socket_path}", "health"]):
        result = ctl(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.startswith("SERVING version="), result.stdout


def test_json_output_is_parseable(daemon):
    result = ctl("--json", "--socket", daemon.socket_path, "health")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["status"] == "SERVING" and reply["version"]
    metrics = json.loads(ctl("--json", "--socket", daemon.socket_path, "metrics").stdout)
    assert "paymentsd_requests_total" in metrics["text"]


def test_an_error_answer_exits_1_and_names_code_and_reason(start_daemon):
    d = start_daemon(env={"PAYMENTSD_TEST_DELAY_MS": "2000"})
    result = ctl("--socket", d.socket_path, "--timeout-ms", "50", "health")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "DEADLINE_EXCEEDED deadline_exceeded" in result.stderr
    as_json = ctl("--json", "--socket", d.socket_path, "--timeout-ms", "50", "health")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["reason"] == "deadline_exceeded"


def test_an_unreachable_daemon_exits_69(tmp_path):
    result = ctl("--socket", str(tmp_path / "nothing.sock"), "health")
    assert result.returncode == 69, result
    assert "cannot connect" in result.stderr


def test_checkout_stock_and_payment_commands(start_daemon, tmp_path):
    import sys
    sys.path.insert(0, str(h.REPO_ROOT))
    from fakestripe.server import FakeStripe
    fs = FakeStripe(port=0, api_key="sk_test_fake", webhook_secret="whsec_test_secret").start()
    try:
        d = start_daemon(env={"STRIPE_API_BASE": fs.url})
        s = ["--socket", d.socket_path]
        assert ctl(*s, "stock", "set", "tee", "5").stdout.strip() == "tee on_hand=5 reserved=0 available=5"
        assert ctl(*s, "stock", "adjust", "tee", "--", "-1").returncode == 0
        result = ctl(*s, "--json", "checkout", "--deal", "d1", "--item", "tee:Red tee:2:1500",
                     "--success-url", "https://shop.example/ok", "--cancel-url", "https://shop.example/no")
        assert result.returncode == 0, result.stderr
        payment = json.loads(result.stdout)
        assert payment["status"] == "CREATED" and payment["created"] is True and payment["amount_total"] == 3000
        assert ctl(*s, "stock", "get", "tee").stdout.strip() == "tee on_hand=4 reserved=2 available=2"
        shown = ctl(*s, "payment", "--deal", "d1")
        assert shown.returncode == 0 and shown.stdout.startswith(payment["payment_id"] + " CREATED deal=d1")
        assert len(json.loads(ctl(*s, "--json", "payments", "--deal", "d1").stdout)) == 1
        events = ctl(*s, "events", "--deal", "d1")
        assert "checkout.created -->CREATED" in events.stdout or "->CREATED" in events.stdout, events.stdout
        missing = ctl(*s, "payment", "--deal", "nobody")
        assert missing.returncode == 1 and "NOT_FOUND deal_not_found" in missing.stderr
        bad = ctl(*s, "checkout", "--deal", "d2", "--item", "tee:Tee:2:1500", "--currency", "USD",
                  "--success-url", "https://a", "--cancel-url", "https://b")
        assert bad.returncode == 1 and "invalid_field" in bad.stderr and "field=currency" in bad.stderr
    finally:
        fs.stop()


def test_webhook_confirm_cancel_and_reconcile_commands(start_daemon, tmp_path):
    import sys
    sys.path.insert(0, str(h.REPO_ROOT))
    from fakestripe.server import FakeStripe
    import checkout_support as cs
    import webhook_support as ws
    fs = FakeStripe(port=0, api_key="sk_test_fake", webhook_secret="whsec_test_secret").start()
    try:
        d = start_daemon(env={"STRIPE_API_BASE": fs.url})
        s = ["--socket", d.socket_path]
        fake = cs.FakeStripeHandle(fs)
        for deal in ("c1", "c2"):
            assert ctl(*s, "checkout", "--deal", deal, "--item", "tee:Tee:1:1500",
                       "--success-url", "https://a", "--cancel-url", "https://b").returncode == 0
        # Paid at Stripe; the webhook body, forwarded from a file, fulfils it.
        session = json.loads(ctl(*s, "--json", "payment", "--deal", "c1").stdout)["checkout_session_id"]
        fake.complete_session(session)
        body, signature = ws.session_delivery(fake, session, ws.COMPLETED)
        (tmp_path / "event.json").write_bytes(body)
        forwarded = ctl(*s, "webhook", "--file", str(tmp_path / "event.json"), "--signature", signature)
        assert forwarded.returncode == 0 and forwarded.stdout.startswith("APPLIED evt_"), forwarded
        again = ctl(*s, "--json", "webhook", "--file", str(tmp_path / "event.json"), "--signature", signature)
        assert json.loads(again.stdout)["outcome"] == "DUPLICATE"
        bad = ctl(*s, "webhook", "--file", str(tmp_path / "event.json"), "--signature", "t=1,v1=00")
        assert bad.returncode == 1 and "UNAUTHENTICATED bad_signature" in bad.stderr
        confirmed = json.loads(ctl(*s, "--json", "confirm", "--deal", "c1").stdout)
        assert confirmed["status"] == "PAID" and confirmed["order_id"]
        canceled = ctl(*s, "cancel", "--deal", "c2", "--reason", "customer left")
        assert canceled.returncode == 0 and " CANCELED deal=c2" in canceled.stdout, canceled
        assert ctl(*s, "cancel", "--deal", "c2").returncode == 1
        report = ctl(*s, "reconcile")
        assert report.returncode == 0 and report.stdout.startswith("expired=0 resumed=0"), report
    finally:
        fs.stop()
