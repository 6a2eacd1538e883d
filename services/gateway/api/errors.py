"""Errors at the HTTP boundary: every exception becomes a status and a plain-text one-line message."""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.exceptions import ValidationException as RequestValidationError
from litestar.openapi.datastructures import ResponseSpec

from cronbus.common.errors import (
    ConflictError,
    CorruptRecordError,
    CronbusError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from cronbus.services.gateway.api.control import ControlError

log = logging.getLogger(__name__)

INTERNAL_ERROR: Final = "internal error"
MAX_MESSAGE_CHARS: Final = 2000

_DESCRIPTIONS: Final = {
    400: "Bad request: invalid JSON, query parameter or job (plain-text reason)",
    401: "A valid API token is required (when tokens are configured)",
    403: "The token's role may not do this",
    404: "Not found (plain-text reason)",
    409: "Conflict (plain-text reason)",
    413: "Request body too large",
    503: "Unavailable: Consul, the leader or a matching executor (plain-text reason)",
}


def one_line(message: str) -> str:
    text = " ".join(message.split())
    return text[: MAX_MESSAGE_CHARS - 3] + "..." if len(text) > MAX_MESSAGE_CHARS else text


def text_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(one_line(message), status_code=status, media_type=MediaType.TEXT, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    # Litestar reports what failed in `extra`: [{"message": ..., "key": ..., "source": ...}].
    parts = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            source = item.get("source", "")
            source = getattr(source, "value", source)  # Litestar gives a ParamType enum
            where = f"{source} parameter {item.get('key')}: " if item.get("key") else ""
            parts.append(f"{where}{item.get('message', '')}".strip())
    return "; ".join(parts) or str(exc.detail)


def status_of(exc: Exception) -> int:
    match exc:
        case ControlError():
            return exc.code if 400 <= exc.code <= 599 else 502
        case ValidationError():
            return 400
        case NotFoundError():
            return 404
        case ConflictError() | CorruptRecordError():  # the stored value is the conflict: its key and why
            return 409
        case UnavailableError():
            return 503
        case msgspec.DecodeError() | msgspec.ValidationError():
            return 400
        case HTTPException():
            return exc.status_code
        case _:
            return 500


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    """Exception handler for every exception: plain-text one-line messages, 500 only for our own bugs."""
    status = status_of(exc)
    if isinstance(exc, RequestValidationError):
        return text_response(400, _validation_message(exc))
    if isinstance(exc, HTTPException):
        headers = {k: v for k, v in (exc.headers or {}).items()}
        return text_response(status, str(exc.detail), headers)
    if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError):
        return text_response(400, f"invalid JSON: {exc}")
    if isinstance(exc, CronbusError) and status != 500:
        return text_response(status, str(exc) or type(exc).__name__)
    log.error(
        "request failed method=%s path=%s: %r",
        request.scope.get("method"),
        request.scope.get("path"),
        exc,
        exc_info=exc,
    )
    return text_response(500, INTERNAL_ERROR)


def responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI descriptions of the error answers a route gives (plus 401/403, which any route may give)."""
    return {
        code: ResponseSpec(
            data_container=str,
            media_type=MediaType.TEXT,
            description=_DESCRIPTIONS.get(code, "Error (plain-text reason)"),
            generate_examples=False,
        )
        for code in sorted({*codes, 401, 403})
    }
