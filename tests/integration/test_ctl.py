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
