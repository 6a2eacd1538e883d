"""`executor_config` per executor, parsed into typed settings: the executors run them, the gateway checks them."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpx

from cronbus.common.errors import ValidationError
from cronbus.common.schedule import parse_duration

EXECUTORS: Final = ("http", "noop", "shell")
HTTP_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
DEFAULT_HTTP_TIMEOUT_S: Final = 30.0

_TRUE: Final = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE: Final = frozenset({"", "0", "f", "F", "false", "FALSE", "False"})
_MEM_LIMIT: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_MEM_UNITS: Final = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SU: Final = re.compile(r"([^:\s]+)(?::([^:\s]+))?")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a method or a header name
_ENV_KEY: Final = re.compile(r"[^=\s]+")


def validate_executor_config(executor: str, config: dict[str, str]) -> None:
    """Raises ValidationError when `executor` is unknown or `config` is invalid for it.

    Checks syntax only, nothing host-specific (whether a user or file exists is the executor's business).
    The message names the key and what is wrong, e.g. ``command: required``. Keys an executor does not
    know are ignored, as Dkron does.
    """
    parse = _PARSERS.get(executor)
    if parse is None:
        raise ValidationError(f"unknown executor '{executor}' (known: {', '.join(EXECUTORS)})")
    for key, value in config.items():
        if not isinstance(value, str):
            raise ValidationError(f"{key}: must be a string, got {type(value).__name__}")
    parse(config)


def parse_bool(key: str, value: str) -> bool:
    """Parses a boolean the way Go's strconv.ParseBool does (Dkron configs use it); empty is False."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValidationError(f"{key}: '{value}' is not a boolean (use true or false)")


def parse_duration_s(key: str, value: str) -> float:
    """Parses a positive Go duration ("1m30s", "500ms") or plain seconds ("30", "2.5") into seconds.

    Sub-microsecond parts are dropped (as by parse_duration), so "500ns" is not positive.
    """
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            # A sign is refused although Go takes "+1m": the executors never accepted one.
            seconds = math.nan if text[:1] in ("+", "-") else parse_duration(text).total_seconds()
        except ValueError:
            seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValidationError(f"{key}: '{value}' is not a positive duration (e.g. 30s, 1m30s or 30)")
    return seconds


# ---- shell ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShellConfig:
    """A shell `executor_config`, parsed and checked."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    timeout_s: float | None
    mem_limit: str  # as written, for messages
    mem_limit_bytes: int | None
    payload: bytes | None
    su_user: str | None
    su_group: str | None


def parse_shell_config(config: dict[str, str]) -> ShellConfig:
    """Parses a shell `executor_config`; raises ValidationError naming the first bad key."""
    command = config.get("command", "").strip()
    if not command:
        raise ValidationError("command: required")
    if parse_bool("shell", config.get("shell", "")):
        argv = ["/bin/sh", "-c", command]
    else:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise ValidationError(f"command: cannot split {command!r}: {exc}") from None
    timeout = config.get("timeout", "")
    timeout_s = parse_duration_s("timeout", timeout) if timeout.strip() else None
    mem_limit = config.get("mem_limit", "").strip()
    mem_limit_bytes = _parse_mem_limit(mem_limit) if mem_limit else None
    payload = config.get("payload", "")
    try:
        payload_bytes = base64.b64decode(payload, validate=True) if payload else None
    except binascii.Error as exc:
        raise ValidationError(f"payload: not valid base64 ({exc})") from None
    env = _parse_env(config.get("env", ""))
    su = config.get("su", "").strip()
    su_match = _SU.fullmatch(su)
    if su and su_match is None:
        raise ValidationError(f"su: '{su}' is not user or user:group")
    return ShellConfig(
        argv=argv,
        env=env,
        cwd=config.get("cwd") or None,
        timeout_s=timeout_s,
        mem_limit=mem_limit,
        mem_limit_bytes=mem_limit_bytes,
        payload=payload_bytes,
        su_user=su_match[1] if su_match else None,
        su_group=su_match[2] if su_match else None,
    )


def _parse_mem_limit(value: str) -> int:
    match = _MEM_LIMIT.fullmatch(value)
    limit = int(float(match[1]) * _MEM_UNITS[match[2].lower()]) if match else 0
    if limit <= 0:
        raise ValidationError(f"mem_limit: '{value}' is not a positive size (e.g. 512M, 1G or bytes)")
    return limit


def _parse_env(value: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, env_value = item.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key.strip()):
            raise ValidationError(f"env: '{item}' is not KEY=value (the list is K=v,K2=v2)")
        env[key.strip()] = env_value
    return env


# ---- http -------------------------------------------------------------------------------------------------------


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


def parse_http_config(config: dict[str, str]) -> HttpConfig:
    """Parses an http `executor_config`; raises ValidationError naming the first bad key."""
    method = config.get("method", "").strip()
    if not method:
        raise ValidationError("method: required")
    if not _TOKEN.fullmatch(method):
        raise ValidationError(f"method: '{method}' is not an HTTP method")
    if method.upper() not in HTTP_METHODS:
        raise ValidationError(f"method: '{method}' is not one of {', '.join(sorted(HTTP_METHODS))}")
    url = _parse_url(config.get("url", "").strip())
    headers = _parse_headers(config.get("headers", ""))
    timeout = config.get("timeout", "")
    timeout_s = parse_duration_s("timeout", timeout) if timeout.strip() else DEFAULT_HTTP_TIMEOUT_S
    expect_codes = _parse_expect_codes(config.get("expectCode", ""))
    expect_body = config.get("expectBody", "")
    try:
        pattern = re.compile(expect_body) if expect_body else None
    except re.error as exc:
        raise ValidationError(f"expectBody: invalid regular expression '{expect_body}' ({exc})") from None
    no_verify_peer = parse_bool("tlsNoVerifyPeer", config.get("tlsNoVerifyPeer", ""))
    certificate_file = config.get("tlsCertificateFile") or None
    certificate_key_file = config.get("tlsCertificateKeyFile") or None
    if (certificate_file is None) != (certificate_key_file is None):
        raise ValidationError("tlsCertificateFile and tlsCertificateKeyFile must be set together")
    return HttpConfig(
        method=method.upper(),
        url=url,
        headers=headers,
        body=config.get("body", ""),
        timeout_s=timeout_s,
        expect_codes=expect_codes,
        expect_body=pattern,
        no_verify_peer=no_verify_peer,
        certificate_file=certificate_file,
        certificate_key_file=certificate_key_file,
        root_cas_file=config.get("tlsRootCAsFile") or None,
    )


def _parse_url(url: str) -> str:
    if not url:
        raise ValidationError("url: required")
    try:
        # Both parsers: urlsplit refuses a port httpx takes ("+80", non-ASCII digits); httpx, which sends the
        # request, refuses what urlsplit takes (white space, control characters, a bad IP or IDNA host).
        urlsplit(url).port  # noqa: B018 - parsing the port is what raises on a bad one
        parsed = httpx.URL(url)
        if any(char.isspace() for char in url):  # httpx quotes it instead
            raise httpx.InvalidURL("white space")
        if parsed.port is not None and not 0 < parsed.port < 65536:  # httpx takes 0 and any number
            raise httpx.InvalidURL(f"invalid port {parsed.port}")
        host = parsed.host  # decoding an IDNA host may raise
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValidationError(f"url: '{url}' is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise ValidationError(f"url: '{url}' is not an http:// or https:// URL with a host")
    return url


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
        # CR and LF are looked for before stripping: a value may not end in a line break either.
        if not sep or not _TOKEN.fullmatch(name.strip()) or "\r" in header_value or "\n" in header_value:
            raise ValidationError(f"headers: '{item}' is not \"Name: value\"")
        headers.append((name.strip(), header_value.strip()))
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
            raise ValidationError(f"expectCode: '{item.strip()}' is not an HTTP status code (e.g. 200,201)")
        codes.add(code)
    return frozenset(codes)


def _accept_anything(config: dict[str, str]) -> None:
    """Dkron's noop takes any configuration; the executor reads `fail` when it runs."""


_PARSERS: Final[dict[str, Callable[[dict[str, str]], object]]] = {
    "http": parse_http_config,
    "noop": _accept_anything,
    "shell": parse_shell_config,
}
