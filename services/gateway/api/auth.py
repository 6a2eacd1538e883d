"""API tokens: each maps to a role (read < operator < admin); a guard checks every request against its route's need."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Final

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

ROLES: Final = ("read", "operator", "admin")
_RANK: Final = {role: rank for rank, role in enumerate(ROLES)}
_READ_METHODS: Final = frozenset({"GET", "HEAD"})

# Route opts: {"role": "operator"} lowers a write route's need; {"public": True} opens a route to everyone.
ROLE: Final = "role"
PUBLIC: Final = "public"
TOKEN_IN_QUERY: Final = "token_in_query"
OPERATOR: Final = {ROLE: "operator"}
READ: Final = {ROLE: "read"}
# EventSource cannot send headers, so the live-output stream alone also takes `?token=`.
READ_STREAM: Final = {ROLE: "read", TOKEN_IN_QUERY: True}
OPEN: Final = {PUBLIC: True}


def presented_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The token of `Authorization: Bearer <token>`, else the password of `Authorization: Basic` (any user name:
    how clients that put Dkron behind a proxy with basic auth send it, django-dkron's DKRON_API_AUTH among them),
    else of `X-Dkron-Token`, else ""."""
    authorization = connection.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if scheme.lower() == "basic" and token.strip():
        try:
            _, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            password = ""
        if password:
            return password
    return connection.headers.get("x-dkron-token", "").strip()


def role_of(token: str, tokens: dict[str, str]) -> str | None:
    """The role of `token`, comparing in constant time against every configured token."""
    found: str | None = None
    presented = token.encode()
    for candidate, role in tokens.items():
        if hmac.compare_digest(presented, candidate.encode()):
            found = role
    return found


def required_role(method: str, opt: dict[str, Any]) -> str:
    role = opt.get(ROLE)
    if isinstance(role, str):
        return role
    return "read" if method in _READ_METHODS else "admin"


def token_guard(tokens: dict[str, str]) -> Guard:
    """A guard that lets everything through when no token is configured; else 401 without a valid token and
    403 when the token's role is below what the route needs."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if not tokens or handler.opt.get(PUBLIC):
            return
        method = str(connection.scope.get("method", "GET"))
        if method == "OPTIONS":  # preflights carry no credentials
            return
        token = presented_token(connection)
        if not token and handler.opt.get(TOKEN_IN_QUERY):
            token = str(connection.query_params.get("token", "")).strip()
        role = role_of(token, tokens) if token else None
        if role is None:
            raise NotAuthorizedException(
                "a valid API token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": 'Bearer realm="cronbus"'},  # not Basic: browsers would prompt
            )
        needed = required_role(method, handler.opt)
        if _RANK.get(role, -1) < _RANK.get(needed, len(ROLES)):
            raise PermissionDeniedException(f"the token's role '{role}' may not do this (needs '{needed}')")

    return guard
