"""The http executor: one HTTP(S) request; success is decided by the status code and a body regex."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from cronbus.common.errors import ValidationError
from cronbus.services.executor.executors.base import (
    Executor,
    RunRequest,
    RunResult,
    effective_timeout_s,
    fail,
    format_seconds,
    notice,
    parse_bool,
    parse_duration_s,
    register,
)

if TYPE_CHECKING:
    from cronbus.services.executor.output import OutputBuffer

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
MATCH_LIMIT_BYTES = 1024 * 1024  # expectBody is searched in the first MiB of the body, keeping memory bounded
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a method or a header name


@dataclass(frozen=True)
class HttpConfig:
    """An http `executor_config`, parsed and checked."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: str
    timeout_s: float
    expect_codes: frozenset[int]  # empty: any 2xx
    expect_body: re.Pattern[str] | None
    no_verify_peer: bool
    certificate_file: str | None
    certificate_key_file: str | None
    root_cas_file: str | None


def parse_config(config: dict[str, str]) -> HttpConfig:
    """Parses an http `executor_config`; raises ValidationError naming the bad key."""
    method = config.get("method", "").strip().upper()
    if not method:
        raise ValidationError("method: required")
    if not _TOKEN.fullmatch(method):
        raise ValidationError(f"method: {method!r} is not an HTTP method")
    url = config.get("url", "").strip()
    if not url:
        raise ValidationError("url: required")
    try:
        parsed = httpx.URL(url)
        # httpx quotes what it could reject: spaces in the host, an out-of-range port.
        if any(char.isspace() for char in url):
            raise httpx.InvalidURL("white space")
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise httpx.InvalidURL(f"invalid port {parsed.port}")
    except httpx.InvalidURL as exc:
        raise ValidationError(f"url: {url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValidationError(f"url: {url!r} is not an http:// or https:// URL with a host")
    timeout = config.get("timeout", "").strip()
    expect_body = config.get("expectBody", "")
    try:
        pattern = re.compile(expect_body) if expect_body else None
    except re.error as exc:
        raise ValidationError(f"expectBody: invalid regular expression {expect_body!r}: {exc}") from None
    certificate_file = config.get("tlsCertificateFile") or None
    certificate_key_file = config.get("tlsCertificateKeyFile") or None
    if (certificate_file is None) != (certificate_key_file is None):
        raise ValidationError("tlsCertificateFile and tlsCertificateKeyFile must be set together")
    return HttpConfig(
        method=method,
        url=url,
        headers=_parse_headers(config.get("headers", "")),
        body=config.get("body", ""),
        timeout_s=parse_duration_s("timeout", timeout) if timeout else DEFAULT_TIMEOUT_S,
        expect_codes=_parse_expect_codes(config.get("expectCode", "")),
        expect_body=pattern,
        no_verify_peer=parse_bool("tlsNoVerifyPeer", config.get("tlsNoVerifyPeer", "")),
        certificate_file=certificate_file,
        certificate_key_file=certificate_key_file,
        root_cas_file=config.get("tlsRootCAsFile") or None,
    )


def _parse_headers(value: str) -> list[tuple[str, str]]:
    if not value.strip():
        return []
    try:
        items = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValidationError(f'headers: not JSON ({exc}); expected ["Name: value", ...]') from None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValidationError('headers: expected a JSON array of strings ["Name: value", ...]')
    headers = []
    for item in items:
        name, sep, header_value = item.partition(":")
        name, header_value = name.strip(), header_value.strip()
        if not sep or not _TOKEN.fullmatch(name) or "\r" in header_value or "\n" in header_value:
            raise ValidationError(f'headers: {item!r} is not "Name: value"')
        headers.append((name, header_value))
    return headers


def _parse_expect_codes(value: str) -> frozenset[int]:
    codes = set()
    for item in value.split(","):
        if not item.strip():
            continue
        try:
            code = int(item)
        except ValueError:
            code = 0
        if not 100 <= code <= 599:
            raise ValidationError(f"expectCode: {item.strip()!r} is not an HTTP status code (e.g. 200,201)")
        codes.add(code)
    return frozenset(codes)


def _ssl_context(config: HttpConfig) -> ssl.SSLContext:
    """Builds the TLS settings (reads files: call it in a thread); raises ValidationError naming the key."""
    try:
        # With a CA file, only those CAs are trusted, as with Go's RootCAs in Dkron.
        context = ssl.create_default_context(cafile=config.root_cas_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError(f"tlsRootCAsFile: cannot load {config.root_cas_file!r}: {exc}") from None
    if config.certificate_file is not None:
        try:
            context.load_cert_chain(config.certificate_file, config.certificate_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValidationError(
                f"tlsCertificateFile: cannot load {config.certificate_file!r}"
                f" with key {config.certificate_key_file!r}: {exc}"
            ) from None
    if config.no_verify_peer:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@register
class HttpExecutor(Executor):
    """Sends one request, following redirects; the output is the final status line and the body.

    The body is streamed into the output (so only its end is kept); `expectBody` is searched in the first
    MATCH_LIMIT_BYTES of it. The timeout covers the whole exchange, body included.
    """

    name = "http"

    @staticmethod
    def validate_config(config: dict[str, str]) -> None:
        parse_config(config)

    async def run(self, request: RunRequest, output: OutputBuffer, kill: asyncio.Event) -> RunResult:
        try:
            config = parse_config(request.config)
            context = await asyncio.to_thread(_ssl_context, config)
        except ValidationError as exc:
            return fail(output, str(exc))
        timeout_s = effective_timeout_s(config.timeout_s, request.timeout_s) or config.timeout_s
        logger.debug("request job=%s exec=%s %s %s", request.job_name, request.execution_id, config.method, config.url)
        requesting = asyncio.create_task(self._request(config, context, timeout_s, output))
        killed = asyncio.create_task(kill.wait())
        try:
            done, _ = await asyncio.wait({requesting, killed}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killed.cancel()
            if not requesting.done():
                requesting.cancel()
                await asyncio.wait({requesting})
        if requesting in done:
            return requesting.result()
        if killed in done:
            notice(output, "killed")
            return RunResult("killed", None, "killed")
        return _timed_out(output, timeout_s)

    @staticmethod
    async def _request(
        config: HttpConfig, context: ssl.SSLContext, timeout_s: float, output: OutputBuffer
    ) -> RunResult:
        body = bytearray()
        try:
            async with (
                httpx.AsyncClient(verify=context, timeout=timeout_s, follow_redirects=True) as client,
                client.stream(
                    config.method, config.url, headers=config.headers, content=config.body.encode() or None
                ) as response,
            ):
                output.write(f"{response.http_version} {response.status_code} {response.reason_phrase}\n".encode())
                async for chunk in response.aiter_bytes():
                    output.write(chunk)
                    if len(body) < MATCH_LIMIT_BYTES:
                        body += chunk[: MATCH_LIMIT_BYTES - len(body)]
        except httpx.TimeoutException:
            return _timed_out(output, timeout_s)
        except (httpx.TransportError, OSError) as exc:
            # An alert during a TLS 1.3 read (e.g. the server wants a client certificate) can surface as a
            # bare ssl.SSLError rather than httpx's wrapper.
            return fail(output, f"connection failed: {str(exc) or type(exc).__name__}")
        except httpx.HTTPError as exc:
            return fail(output, f"request failed: {str(exc) or type(exc).__name__}")
        status = response.status_code
        if config.expect_codes and status not in config.expect_codes:
            expected = ",".join(str(code) for code in sorted(config.expect_codes))
            return fail(output, f"unexpected status {status} (expected {expected})")
        if not config.expect_codes and not 200 <= status < 300:
            return fail(output, f"unexpected status {status} (expected 2xx)")
        if config.expect_body is not None and not config.expect_body.search(body.decode(errors="replace")):
            return fail(output, f"body does not match /{config.expect_body.pattern}/")
        return RunResult("success", None)


def _timed_out(output: OutputBuffer, timeout_s: float) -> RunResult:
    reason = f"timed out after {format_seconds(timeout_s)}"
    notice(output, reason)
    return RunResult("timeout", None, reason)
