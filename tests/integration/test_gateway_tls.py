"""The gateway over HTTPS (--tls-cert/--tls-key), the client's --ca-file, and the rule that tokens off loopback
travel over TLS unless --insecure."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from cronbus.common.consul.agent import DevAgent, free_port
from tests.helpers import Cluster, wait_until

TOKEN = "tls-test-admin-token-0123456789"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, made by the openssl CLI."""
    openssl = shutil.which("openssl")
    assert openssl, "this test needs the openssl command"
    cert, key = folder / "gateway.crt", folder / "gateway.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def _cronbus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cronbus.services", *args],
        check=False, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_the_gateway_serves_https_off_loopback(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _self_signed(tmp_path)
    # The certificate comes from the config file, as any setting does.
    config = tmp_path / "cronbus.yaml"
    config.write_text(yaml.safe_dump({"gateway": {"tls-cert": str(cert), "tls-key": str(key)}}))
    monkeypatch.setenv("CRONBUS_CONFIG", str(config))
    port = free_port()
    gateway, _ = cluster.gateway("--bind", "0.0.0.0", "--token", f"{TOKEN}:admin", name="g1", port=port)
    monkeypatch.delenv("CRONBUS_CONFIG")
    wait_until(lambda: "gateway listening on https://0.0.0.0" in gateway.log(), timeout_s=20, what="an https gateway")
    url = f"https://127.0.0.1:{port}"

    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=cert), timeout=10) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/v1/jobs").status_code == 401  # tokens still apply
        assert http.get("/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    with pytest.raises(httpx.TransportError):  # nothing is served in clear on that port
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)

    listed = _cronbus("jobs", "list", "--gateway", url, "--token", TOKEN, "--ca-file", str(cert))
    assert listed.returncode == 0, listed.stderr
    from_env = _cronbus("jobs", "list", "--gateway", url, env={"CRONBUS_TOKEN": TOKEN, "CRONBUS_CA_FILE": str(cert)})
    assert from_env.returncode == 0, from_env.stderr
    untrusted = _cronbus("jobs", "list", "--gateway", url, "--token", TOKEN)
    assert untrusted.returncode != 0
    assert "certificate is not trusted" in untrusted.stderr and "--ca-file" in untrusted.stderr, untrusted.stderr
    missing = _cronbus("jobs", "list", "--gateway", url, "--ca-file", str(tmp_path / "none.pem"))
    assert missing.returncode == 2 and "cannot read the CA file" in missing.stderr, missing.stderr


def test_tokens_over_plain_http_off_loopback_need_insecure(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path
) -> None:
    cert, _ = _self_signed(tmp_path)
    consul = ["--consul", cluster.consul_addr, "--port", str(free_port())]

    plain = _cronbus("gateway", *consul, "--bind", "0.0.0.0", "--token", f"{TOKEN}:admin")
    assert plain.returncode == 2, plain.stderr
    assert "over plain HTTP on 0.0.0.0" in plain.stderr
    assert all(flag in plain.stderr for flag in ("--tls-cert", "--tls-key", "--insecure"))
    bare = _cronbus("gateway", *consul, "--bind", "0.0.0.0")  # the rule that was: no tokens, no exposure
    assert bare.returncode == 2 and "without API tokens" in bare.stderr, bare.stderr
    half = _cronbus("gateway", *consul, "--bind", "0.0.0.0", "--token", f"{TOKEN}:admin", "--tls-cert", str(cert))
    assert half.returncode == 2 and "--tls-cert needs --tls-key" in half.stderr, half.stderr
    wrong = _cronbus("gateway", *consul, "--tls-cert", str(cert), "--tls-key", str(cert))
    assert wrong.returncode == 2 and f"cannot load {cert} with {cert}" in wrong.stderr, wrong.stderr

    # Told --insecure, it serves tokens over plain HTTP; on loopback it needs nothing.
    accepted, _ = cluster.gateway("--bind", "0.0.0.0", "--token", f"{TOKEN}:admin", "--insecure", name="g1")
    wait_until(lambda: "registered service=cronbus-gateway" in accepted.log(), timeout_s=20, what="the gateway")
    assert "over plain HTTP" not in accepted.log()
    local, _ = cluster.gateway("--token", f"{TOKEN}:admin", name="g2")
    wait_until(lambda: "registered service=cronbus-gateway" in local.log(), timeout_s=20, what="the gateway")
    assert "gateway listening on http://127.0.0.1" in local.log()
    # SIGHUP re-reads bus keys; a process without them takes it too, and goes on (the units' ExecReload sends it).
    local.signal(signal.SIGHUP)
    wait_until(lambda: "no bus keys to reload" in local.log(), timeout_s=20, what="the SIGHUP handled")
    assert local.alive()
    for process in (accepted, local):
        process.signal(signal.SIGTERM)
        assert process.stop() == 0
