"""Checks of `executor_config` per executor, run when a job is written (syntax only, nothing host-specific)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

from cronbus.common.errors import ValidationError
from cronbus.common.schedule import parse_duration

EXECUTORS: Final = ("http", "noop", "shell")
HTTP_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

_TRUE: Final = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE: Final = frozenset({"", "0", "f", "F", "false", "FALSE", "False"})
_MEM_LIMIT: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SU: Final = re.compile(r"[^:\s]+(?::[^:\s]+)?")
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_ENV_KEY: Final = re.compile(r"[^=\s]+")


def validate_executor_config(executor: str, config: dict[str, str]) -> None:
    """Raises ValidationError when `executor` is unknown or `config` is invalid for it.

    The message names the key and what is wrong, e.g. ``command: required``. Keys an executor does not
    know are ignored, as Dkron does.
    """
    check = _CHECKS.get(executor)
    if check is None:
        raise ValidationError(f"unknown executor '{executor}' (known: {', '.join(EXECUTORS)})")
    for key, value in config.items():
        if not isinstance(value, str):
            raise ValidationError(f"{key}: must be a string, got {type(value).__name__}")
    check(config)


def _check_bool(key: str, value: str) -> None:
    # Go's strconv.ParseBool, which Dkron uses for these flags.
    if value not in _TRUE and value not in _FALSE:
        raise ValidationError(f"{key}: '{value}' is not a boolean (use true or false)")


def _check_seconds_or_duration(key: str, value: str) -> None:
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text).total_seconds()
        except ValueError:
            seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValidationError(f"{key}: '{value}' is not a positive duration (e.g. 30s, 1m30s or 30)")


def _check_shell(config: dict[str, str]) -> None:
    if not config.get("command", "").strip():
        raise ValidationError("command: required")
    _check_bool("shell", config.get("shell", ""))
    timeout = config.get("timeout", "")
    if timeout.strip():
        _check_seconds_or_duration("timeout", timeout)
    mem_limit = config.get("mem_limit", "").strip()
    if mem_limit:
        match = _MEM_LIMIT.fullmatch(mem_limit)
        if match is None or float(match[1]) <= 0:
            raise ValidationError(f"mem_limit: '{mem_limit}' is not a positive size (e.g. 512M, 1G or bytes)")
    payload = config.get("payload", "")
    if payload:
        try:
            base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise ValidationError(f"payload: not valid base64 ({exc})") from None
    for item in config.get("env", "").split(","):
        if not item.strip():
            continue
        key, sep, _ = item.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key.strip()):
            raise ValidationError(f"env: '{item}' is not KEY=value (the list is K=v,K2=v2)")
    su = config.get("su", "").strip()
    if su and not _SU.fullmatch(su):
        raise ValidationError(f"su: '{su}' is not user or user:group")


def _check_http(config: dict[str, str]) -> None:
    method = config.get("method", "").strip()
    if not method:
        raise ValidationError("method: required")
    if method.upper() not in HTTP_METHODS:
        raise ValidationError(f"method: '{method}' is not one of {', '.join(sorted(HTTP_METHODS))}")
    url = config.get("url", "").strip()
    if not url:
        raise ValidationError("url: required")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises on a bad one
    except ValueError as exc:
        raise ValidationError(f"url: '{url}' is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"url: '{url}' is not an http:// or https:// URL with a host")
    _check_headers(config.get("headers", ""))
    timeout = config.get("timeout", "")
    if timeout.strip():
        _check_seconds_or_duration("timeout", timeout)
    for item in config.get("expectCode", "").split(","):
        if not item.strip():
            continue
        try:
            code = int(item)
        except ValueError:
            code = 0
        if not 100 <= code <= 599:
            raise ValidationError(f"expectCode: '{item.strip()}' is not an HTTP status code (e.g. 200,201)")
    expect_body = config.get("expectBody", "")
    if expect_body:
        try:
            re.compile(expect_body)
        except re.error as exc:
            raise ValidationError(f"expectBody: invalid regular expression '{expect_body}' ({exc})") from None
    _check_bool("tlsNoVerifyPeer", config.get("tlsNoVerifyPeer", ""))
    if bool(config.get("tlsCertificateFile")) != bool(config.get("tlsCertificateKeyFile")):
        raise ValidationError("tlsCertificateFile and tlsCertificateKeyFile must be set together")


def _check_headers(value: str) -> None:
    if not value.strip():
        return
    try:
        items = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValidationError(f'headers: not JSON ({exc}); expected ["Name: value", ...]') from None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValidationError('headers: expected a JSON array of strings ["Name: value", ...]')
    for item in items:
        name, sep, header_value = item.partition(":")
        if not sep or not _HEADER_NAME.fullmatch(name.strip()) or "\r" in header_value or "\n" in header_value:
            raise ValidationError(f"headers: '{item}' is not \"Name: value\"")


def _check_noop(config: dict[str, str]) -> None:
    """The noop executor accepts any configuration."""


_CHECKS: Final[dict[str, Callable[[dict[str, str]], None]]] = {
    "http": _check_http,
    "noop": _check_noop,
    "shell": _check_shell,
}
