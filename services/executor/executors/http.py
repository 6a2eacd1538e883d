"""The http executor: one HTTP(S) request; success is decided by the status code and a body regex."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

import httpx

from cronbus.common.errors import ValidationError
from cronbus.common.executor_config import HttpConfig, parse_http_config
from cronbus.services.executor.executors.base import (
    Executor,
    RunRequest,
    RunResult,
    effective_timeout_s,
    fail,
    format_seconds,
    notice,
    register,
)

if TYPE_CHECKING:
    from cronbus.services.executor.output import OutputBuffer

logger = logging.getLogger(__name__)

MATCH_LIMIT_BYTES = 1024 * 1024  # expectBody is searched in the first MiB of the body, keeping memory bounded


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
        parse_http_config(config)

    async def run(self, request: RunRequest, output: OutputBuffer, kill: asyncio.Event) -> RunResult:
        try:
            config = parse_http_config(request.config)
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
