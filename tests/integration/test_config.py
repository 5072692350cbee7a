"""Configuration and the command line (protocol.md section 7)."""

from __future__ import annotations

import os
import re

import pytest

import paymentsd_harness as h

EX_CONFIG = 78


def _check_config_error(res, variable: str, secrets=()):
    lines = res.stderr.splitlines()
    assert res.returncode == EX_CONFIG, (
        f"expected exit status {EX_CONFIG} (EX_CONFIG), got {res.returncode}; "
        f"stderr:\n{res.stderr}")
    assert len(lines) == 1, (
        f"expected exactly one line on stderr, got {len(lines)}:\n{res.stderr}")
    line = lines[0]
    assert variable.lower() in line.lower(), (
        f"the error line does not name {variable}: {line!r}")
    assert h.LOG_PREFIX_RE.match(line), f"no syslog <N> prefix: {line!r}"
    for s in (*h.SECRETS, *secrets):
        assert s not in res.stderr and s not in res.stdout, (
            f"a secret value ({s[:8]}...) was printed: {res.stderr!r}")


BAD_CONFIG = [
    ("PAYMENTSD_MAX_FRAME", "abc"),
    ("PAYMENTSD_MAX_FRAME", "0"),
    ("PAYMENTSD_MAX_FRAME", "-1"),
    ("PAYMENTSD_MAX_FRAME", "99999999999999999999999"),
    ("PAYMENTSD_CHECKOUT_TTL", "60"),
    ("PAYMENTSD_CHECKOUT_TTL", "86401"),
    ("PAYMENTSD_CHECKOUT_TTL", "ten"),
    ("PAYMENTSD_JANITOR_INTERVAL", "-1"),
    ("PAYMENTSD_JANITOR_INTERVAL", "x"),
    ("PAYMENTSD_LOG_LEVEL", "loud"),
    ("PAYMENTSD_ALLOW_GIDS", "no-such-group-xyz"),
    ("PAYMENTSD_ADMIN_GIDS", "no-such-group-xyz"),
    ("STRIPE_SECRET_KEY", None),
    ("STRIPE_SECRET_KEY", ""),
    ("STRIPE_SECRET_KEY", "not-a-key-SECRETVALUE"),
    ("STRIPE_WEBHOOK_SECRETS", None),
    ("STRIPE_WEBHOOK_SECRETS", "not-a-webhook-secret-SECRETVALUE"),
    ("STRIPE_API_BASE", "ftp://x"),
    ("STRIPE_API_BASE", "not a url"),
]


@pytest.mark.parametrize("variable,value", BAD_CONFIG,
                         ids=[f"{k}={v!r}" for k, v in BAD_CONFIG])
def test_bad_config_exits_78(make_daemon, variable, value):
    d = make_daemon(env={variable: value})
    res = d.run_to_exit(timeout=20)
    _check_config_error(res, variable, secrets=("SECRETVALUE",))


GOOD_CONFIG = [
    ("PAYMENTSD_CHECKOUT_TTL", "1800"),
    ("PAYMENTSD_CHECKOUT_TTL", "86400"),
    ("PAYMENTSD_JANITOR_INTERVAL", "5"),
    ("PAYMENTSD_LOG_LEVEL", "info"),
    ("PAYMENTSD_LOG_LEVEL", "notice"),
    ("PAYMENTSD_LOG_LEVEL", "warning"),
    ("PAYMENTSD_LOG_LEVEL", "error"),
    ("PAYMENTSD_ALLOW_GIDS", "nogroup,0"),
    ("PAYMENTSD_ADMIN_GIDS", "root"),
    ("STRIPE_WEBHOOK_SECRETS", "whsec_old,whsec_new"),
    ("STRIPE_API_BASE", "http://localhost:12345"),
]


@pytest.mark.parametrize("variable,value", GOOD_CONFIG,
                         ids=[f"{k}={v}" for k, v in GOOD_CONFIG])
def test_good_config_starts(start_daemon, variable, value):
    d = start_daemon(env={variable: value})
    assert d.health().status == h.pb().SERVING_STATUS_SERVING
    if variable == "STRIPE_WEBHOOK_SECRETS":
        for s in value.split(","):
            assert s not in d.stderr_text(), "a webhook secret appears in stderr"


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_credentials_directory(start_daemon, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    _write(creds / "stripe-secret-key", "sk_test_fromfile123")
    _write(creds / "stripe-webhook-secrets", "whsec_fromfile456")
    d = start_daemon(env={"STRIPE_SECRET_KEY": None, "STRIPE_WEBHOOK_SECRETS": None,
                          "CREDENTIALS_DIRECTORY": str(creds)})
    assert d.health().status == h.pb().SERVING_STATUS_SERVING
    d.stop()
    text = d.stderr_text()
    assert "sk_test_fromfile123" not in text and "whsec_fromfile456" not in text, (
        "a credential read from CREDENTIALS_DIRECTORY appears in stderr")


def test_credentials_directory_key_only(start_daemon, tmp_path):
    """Each credential file is used on its own when present."""
    creds = tmp_path / "creds"
    creds.mkdir()
    _write(creds / "stripe-secret-key", "sk_test_fromfile123")
    d = start_daemon(env={"STRIPE_SECRET_KEY": None,
                          "CREDENTIALS_DIRECTORY": str(creds)})
    assert d.health().status == h.pb().SERVING_STATUS_SERVING


def test_credentials_directory_bad_key(make_daemon, tmp_path):
    """A bad key in the credential file is a configuration error too (and
    shows that the file is read at all)."""
    creds = tmp_path / "creds"
    creds.mkdir()
    _write(creds / "stripe-secret-key", "bogus-SECRETVALUE")
    _write(creds / "stripe-webhook-secrets", "whsec_fromfile456")
    d = make_daemon(env={"STRIPE_SECRET_KEY": None, "STRIPE_WEBHOOK_SECRETS": None,
                         "CREDENTIALS_DIRECTORY": str(creds)})
    res = d.run_to_exit(timeout=20)
    assert res.returncode == EX_CONFIG, (res.returncode, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert re.search(r"stripe[-_]secret[-_]key", lines[0], re.I), (
        f"the error line names neither STRIPE_SECRET_KEY nor the file: {lines[0]!r}")
    for s in ("SECRETVALUE", "whsec_fromfile456"):
        assert s not in res.stderr + res.stdout, "secret printed"


def test_version(make_daemon):
    d = make_daemon(args=["--version"])
    res = d.run_to_exit(timeout=20)
    assert res.returncode == 0, (res.returncode, res.stderr)
    assert res.stdout.strip(), f"--version printed nothing on stdout (stderr: {res.stderr!r})"
    assert re.search(r"\d", res.stdout), f"no version number in {res.stdout!r}"


def test_version_needs_no_configuration(make_daemon):
    d = make_daemon(args=["--version"], env={
        "STRIPE_SECRET_KEY": None, "STRIPE_WEBHOOK_SECRETS": None,
        "PAYMENTSD_SOCKET": None, "PAYMENTSD_DB": None, "STRIPE_API_BASE": None,
        "PAYMENTSD_LOG_LEVEL": None})
    res = d.run_to_exit(timeout=20)
    assert res.returncode == 0, (res.returncode, res.stderr)
    assert res.stdout.strip()


def test_version_matches_health(start_daemon, make_daemon):
    live = start_daemon()
    version = live.health().version
    res = make_daemon(args=["--version"]).run_to_exit(timeout=20)
    assert version in res.stdout, (
        f"Health says version {version!r}, --version prints {res.stdout!r}")


def test_crash_points(make_daemon):
    d = make_daemon(args=["crash-points"])
    res = d.run_to_exit(timeout=20)
    assert res.returncode == 0, (res.returncode, res.stderr)
    names = res.stdout.splitlines()
    assert len(names) == len(set(names)), f"duplicate crash points: {names}"
    for n in names:
        assert re.fullmatch(r"[A-Za-z0-9_.:-]+", n), f"odd crash point name {n!r}"


def test_socket_flag(make_daemon):
    """--socket PATH overrides the default path."""
    d = make_daemon(env={"PAYMENTSD_SOCKET": None})
    path = os.path.join(d.workdir, "flag.sock")
    d.args = ["--socket", path]
    d.socket_path = path
    d.start()
    assert d.health().status == h.pb().SERVING_STATUS_SERVING
