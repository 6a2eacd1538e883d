"""The http executor against real local HTTP and HTTPS servers (certificates made with openssl)."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cronbus.common.consul.agent import free_port
from cronbus.common.errors import ValidationError
from cronbus.services.executor.executors.base import RunRequest, RunResult, validate_executor_config
from cronbus.services.executor.executors.http import HttpExecutor
from cronbus.services.executor.output import OutputBuffer
from tests.helpers import async_wait_until

BIG_BODY_BYTES = 10_000_000
OPENSSL_CONFIG = """
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class LocalServer(ThreadingHTTPServer):
    """A real HTTP server on a loopback port, serving the routes of Handler from a thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.hanging = threading.Event()  # a request is waiting in /hang
        self.release = threading.Event()  # lets it go (at teardown)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}{path}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalServer

    def do_GET(self) -> None:
        self.handle_any()

    def do_POST(self) -> None:
        self.handle_any()

    def do_PUT(self) -> None:
        self.handle_any()

    def handle_any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path
        if path == "/echo":
            echo = {"method": self.command, "headers": dict(self.headers), "body": body.decode()}
            self.reply(200, json.dumps(echo).encode(), "application/json")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self.reply(code, f"status {code}".encode())
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG_BODY_BYTES))
            self.end_headers()
            block = b"b" * 100_000
            for _ in range(BIG_BODY_BYTES // len(block)):
                self.wfile.write(block)
        elif path == "/hang":
            self.server.hanging.set()
            self.server.release.wait(timeout=30)
            self.reply(200, b"late")
        elif path == "/whoami":
            certificate: Any = self.connection.getpeercert()
            subject = dict(item[0] for item in certificate["subject"])
            self.reply(200, subject["commonName"].encode())
        else:
            self.reply(404, b"no such route")

    def reply(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on what the executor saw."""


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, made by the openssl CLI."""
    openssl = shutil.which("openssl")
    assert openssl, "these tests need the openssl command"
    folder = tmp_path_factory.mktemp("pki")
    config = folder / "openssl.cnf"
    config.write_text(OPENSSL_CONFIG)
    key_options = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-config", str(config), "-extensions", "ca", *key_options, "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "2", "-subj", "/CN=cronbus-test-ca")  # fmt: skip
    for name, common_name, serial in (("server", "127.0.0.1", "2"), ("client", "cronbus-client", "3")):
        run("req", "-new", "-config", str(config), *key_options, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={common_name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", serial,
            "-days", "2", "-extfile", str(config), "-extensions", name, "-out", f"{name}.crt")  # fmt: skip
    return Pki(
        folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "client.crt", folder / "client.key"
    )


def serve(context: ssl.SSLContext | None = None) -> Iterator[LocalServer]:
    server = LocalServer(context)
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        server.thread.join(timeout=10)


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    yield from serve()


@pytest.fixture
def https_server(pki: Pki) -> Iterator[LocalServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    yield from serve(context)


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[LocalServer]:
    """An HTTPS server that requires a client certificate from the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    yield from serve(context)


async def run(
    config: dict[str, str], timeout_s: float | None = None, kill: asyncio.Event | None = None
) -> tuple[RunResult, OutputBuffer]:
    request = RunRequest(
        execution_id="ping-1-1",
        job_name="ping",
        scheduled_at=datetime(2026, 1, 1, tzinfo=UTC),
        attempt=1,
        executor="http",
        config=config,
        timeout_s=timeout_s,
    )
    output = OutputBuffer()
    result = await HttpExecutor().run(request, output, kill or asyncio.Event())
    return result, output


def get(url: str, **config: str) -> dict[str, str]:
    return {"method": "GET", "url": url, **config}


def body_of(output: OutputBuffer) -> str:
    return output.text().split("\n", 1)[1]


# ---- requests and output ---------------------------------------------------------------------------------


async def test_output_is_the_status_line_and_the_body(http_server: LocalServer) -> None:
    result, output = await run(get(http_server.url("/status/200")))
    assert result == RunResult("success", None)
    assert output.text() == "HTTP/1.1 200 OK\nstatus 200"


async def test_method_headers_and_body_are_sent(http_server: LocalServer) -> None:
    headers = json.dumps(["X-Token: abc: def", "Content-Type: text/plain"])
    result, output = await run({"method": "post", "url": http_server.url("/echo"), "headers": headers, "body": "hello"})
    assert result.status == "success"
    echo = json.loads(body_of(output))
    assert echo["method"] == "POST"
    assert echo["headers"]["X-Token"] == "abc: def"
    assert echo["headers"]["Content-Type"] == "text/plain"
    assert echo["body"] == "hello"


async def test_redirects_are_followed(http_server: LocalServer) -> None:
    result, output = await run(get(http_server.url("/redirect")))
    assert result.status == "success"
    assert output.text().startswith("HTTP/1.1 200 OK\n")
    assert json.loads(body_of(output))["method"] == "GET"


async def test_a_huge_body_keeps_only_its_end(http_server: LocalServer) -> None:
    result, output = await run(get(http_server.url("/big"), expectBody="^b+$"))
    assert result.status == "success"
    assert output.total_bytes == len("HTTP/1.1 200 OK\n") + BIG_BODY_BYTES
    assert output.truncated
    assert output.data() == b"b" * 256_000


# ---- expectations -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expect_code", "reason"),
    [
        ("/status/204", "", ""),
        ("/status/500", "", "unexpected status 500 (expected 2xx)"),
        ("/status/302", "", "unexpected status 302 (expected 2xx)"),
        ("/status/201", "200,201", ""),
        ("/status/404", "404", ""),
        ("/status/500", "201, 200", "unexpected status 500 (expected 200,201)"),
        ("/status/200", "201", "unexpected status 200 (expected 201)"),
    ],
)
async def test_expect_code(http_server: LocalServer, path: str, expect_code: str, reason: str) -> None:
    result, output = await run(get(http_server.url(path), expectCode=expect_code))
    assert result == RunResult("failed" if reason else "success", None, reason)
    assert reason in output.text()


async def test_expect_body(http_server: LocalServer) -> None:
    result, _ = await run(get(http_server.url("/echo"), expectBody=r'"method":\s*"GET"'))
    assert result.status == "success"
    result, output = await run(get(http_server.url("/echo"), expectBody="^nope"))
    assert result == RunResult("failed", None, "body does not match /^nope/")
    assert output.text().endswith("\n[cronbus] body does not match /^nope/\n")


# ---- failures, timeouts, kill -----------------------------------------------------------------------------


async def test_connection_refused() -> None:
    result, output = await run(get(f"http://127.0.0.1:{free_port()}/"))
    assert result.status == "failed"
    assert result.reason.startswith("connection failed: ")
    assert result.reason in output.text()


async def test_timeout_from_config(http_server: LocalServer) -> None:
    result, output = await run(get(http_server.url("/hang"), timeout="0.5"))
    assert result == RunResult("timeout", None, "timed out after 0.5s")
    assert output.text() == "[cronbus] timed out after 0.5s\n"


async def test_the_job_timeout_applies_when_smaller(http_server: LocalServer) -> None:
    result, _ = await run(get(http_server.url("/hang"), timeout="30"), timeout_s=0.3)
    assert result == RunResult("timeout", None, "timed out after 0.3s")


async def test_kill_event_cancels_the_request(http_server: LocalServer) -> None:
    kill = asyncio.Event()
    running = asyncio.create_task(run(get(http_server.url("/hang")), kill=kill))

    async def hanging() -> bool:
        return http_server.hanging.is_set()

    await async_wait_until(hanging, timeout_s=5, what="the request to reach the server")
    kill.set()
    result, output = await asyncio.wait_for(running, timeout=10)
    assert result == RunResult("killed", None, "killed")
    assert output.text() == "[cronbus] killed\n"


# ---- TLS ----------------------------------------------------------------------------------------------------


async def test_an_untrusted_certificate_fails(https_server: LocalServer) -> None:
    result, output = await run(get(https_server.url("/status/200")))
    assert result.status == "failed"
    assert result.reason.startswith("connection failed: ")
    assert "CERTIFICATE_VERIFY_FAILED" in result.reason
    assert result.reason in output.text()


async def test_tls_no_verify_peer(https_server: LocalServer) -> None:
    result, output = await run(get(https_server.url("/status/200"), tlsNoVerifyPeer="true"))
    assert result.status == "success"
    assert output.text() == "HTTP/1.1 200 OK\nstatus 200"


async def test_tls_root_cas_file(https_server: LocalServer, pki: Pki) -> None:
    result, _ = await run(get(https_server.url("/status/200"), tlsRootCAsFile=str(pki.ca)))
    assert result.status == "success"


async def test_client_certificate(mtls_server: LocalServer, pki: Pki) -> None:
    config = get(mtls_server.url("/whoami"), tlsRootCAsFile=str(pki.ca))
    result, _ = await run(config)
    assert result.status == "failed"
    assert result.reason.startswith("connection failed: ")
    config |= {"tlsCertificateFile": str(pki.client_cert), "tlsCertificateKeyFile": str(pki.client_key)}
    result, output = await run(config)
    assert result.status == "success"
    assert body_of(output) == "cronbus-client"


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"tlsRootCAsFile": "/nonexistent/ca.pem"}, "tlsRootCAsFile: cannot load '/nonexistent/ca.pem'"),
        (
            {"tlsCertificateFile": "/nonexistent/c.pem", "tlsCertificateKeyFile": "/nonexistent/k.pem"},
            "tlsCertificateFile: cannot load '/nonexistent/c.pem' with key '/nonexistent/k.pem'",
        ),
    ],
)
async def test_missing_tls_files_fail_the_run(https_server: LocalServer, config: dict[str, str], reason: str) -> None:
    result, output = await run(get(https_server.url("/status/200"), **config))
    assert result.status == "failed"
    assert result.reason.startswith(reason)
    assert result.reason in output.text()


# ---- configuration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"url": "http://example.com/"}, "method: required"),
        ({"method": "GET"}, "url: required"),
        ({"method": "GE T", "url": "http://example.com/"}, "method: 'GE T' is not an HTTP method"),
        ({"method": "GET", "url": "ftp://example.com/"}, "url: 'ftp://example.com/' is not an http:// or https://"),
        ({"method": "GET", "url": "example.com/path"}, "url: 'example.com/path' is not an http:// or https://"),
        ({"method": "GET", "url": "http://"}, "url: 'http://' is not"),
        ({"method": "GET", "url": "http://example.com:99999/"}, "url: 'http://example.com:99999/' is not a valid URL"),
        ({"method": "GET", "url": "http://exa mple.com/"}, "url: 'http://exa mple.com/' is not a valid URL"),
        ({"method": "GET", "url": "http://x/", "headers": "X-A: 1"}, "headers: not JSON"),
        ({"method": "GET", "url": "http://x/", "headers": '{"X-A": "1"}'}, "headers: expected a JSON array"),
        ({"method": "GET", "url": "http://x/", "headers": '["X-A 1"]'}, "headers: 'X-A 1' is not \"Name: value\""),
        ({"method": "GET", "url": "http://x/", "expectCode": "200,abc"}, "expectCode: 'abc' is not an HTTP status"),
        ({"method": "GET", "url": "http://x/", "expectCode": "99"}, "expectCode: '99' is not an HTTP status"),
        ({"method": "GET", "url": "http://x/", "expectBody": "(unclosed"}, "expectBody: invalid regular expression"),
        ({"method": "GET", "url": "http://x/", "timeout": "soon"}, "timeout: 'soon' is not a positive duration"),
        ({"method": "GET", "url": "http://x/", "tlsNoVerifyPeer": "si"}, "tlsNoVerifyPeer: 'si' is not a boolean"),
        (
            {"method": "GET", "url": "http://x/", "tlsCertificateFile": "c.pem"},
            "tlsCertificateFile and tlsCertificateKeyFile must be set together",
        ),
    ],
)
def test_invalid_config_is_rejected_with_a_clear_message(config: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_executor_config("http", config)
    assert str(raised.value).startswith(message)


def test_valid_config() -> None:
    validate_executor_config(
        "http",
        {
            "method": "PUT",
            "url": "https://example.com:8443/hook?x=1",
            "headers": '["Authorization: Bearer t", "X-Empty:"]',
            "body": "{}",
            "timeout": "10",
            "expectCode": "200, 202",
            "expectBody": "ok|done",
            "tlsNoVerifyPeer": "false",
            "debug": "true",  # Dkron's; ignored
        },
    )
