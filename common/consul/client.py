"""A typed asyncio facade over py-consul: every Consul call cronbus makes goes through ConsulClient."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Sequence
from typing import Any, Final, cast

import aiohttp
import consul
import consul.aio
import consul.callback
import consul.exceptions
import msgspec

from cronbus.common.errors import ConsulError

log = logging.getLogger(__name__)


class KVEntry(msgspec.Struct, frozen=True):
    key: str
    value: bytes
    modify_index: int
    lock_index: int = 0
    session: str = ""


class TxnOp(msgspec.Struct, frozen=True):
    """One KV operation of a transaction (Consul allows at most 64 per transaction)."""

    verb: str  # "set", "cas", "delete", "delete-cas", "delete-tree", "check-index", "check-session", ...
    key: str
    value: bytes = b""
    index: int = 0
    session: str = ""


MAX_TXN_OPS = 64


class TxnError(msgspec.Struct, frozen=True):
    op_index: int
    what: str


def _entry(raw: dict[str, Any]) -> KVEntry:
    value = raw.get("Value")
    if isinstance(value, str):  # txn results are base64; kv reads are decoded by py-consul already
        value = base64.b64decode(value)
    return KVEntry(
        key=raw["Key"],
        value=value or b"",
        modify_index=int(raw.get("ModifyIndex", 0)),
        lock_index=int(raw.get("LockIndex", 0)),
        session=raw.get("Session") or "",
    )


class _TxnKV(msgspec.Struct):
    Key: str
    Value: bytes | None = None  # base64 in the JSON
    ModifyIndex: int = 0
    LockIndex: int = 0
    Session: str | None = None


class _TxnResult(msgspec.Struct):
    KV: _TxnKV | None = None


class _TxnResults(msgspec.Struct):
    Results: list[_TxnResult] | None = None


class _TxnErrorJSON(msgspec.Struct):
    OpIndex: int = -1
    What: str = ""


class _TxnErrors(msgspec.Struct):
    Errors: list[_TxnErrorJSON] | None = None


_json = msgspec.json.Encoder()
_txn_results = msgspec.json.Decoder(_TxnResults)
_txn_errors = msgspec.json.Decoder(_TxnErrors)


def _code_and_body(response: Any) -> tuple[int, str]:
    """A py-consul callback that leaves the answer to the caller."""
    return int(response.code), str(response.body)


class KVItem(msgspec.Struct, frozen=True, rename="pascal"):
    """An entry of a KV listing (kv_items) whose value is decoded only when asked for: a reader that keeps what it
    decoded before (JobView) decodes only the entries whose modify index moved."""

    key: str
    value: msgspec.Raw = msgspec.Raw(b"null")  # the value's JSON, as Consul answered it: base64, or null
    modify_index: int = 0
    lock_index: int = 0
    session: str | None = None

    def entry(self) -> KVEntry:
        """The entry with its value; raises ConsulError when the value is not base64."""
        try:
            value = _kv_value.decode(self.value) or b""
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConsulError(f"consul KV value of {self.key} unreadable: {exc}") from exc
        return KVEntry(self.key, value, self.modify_index, self.lock_index, self.session or "")


_kv_value = msgspec.json.Decoder(bytes | None)
_kv_items = msgspec.json.Decoder(list[KVItem] | None)


def _index_and_items(response: Any) -> tuple[str, list[KVItem]]:
    """A py-consul callback for a recursive KV read: its errors as py-consul raises them (404 is no entry), its
    entries decoded by msgspec with their values left in the answer. (py-consul's json.loads made a dict and a
    base64 string of every entry, then its value: the job watch reads every definition at each change, and at
    each timeout of its blocking query, and that cost the leader more than the definitions' size each time.)"""
    consul.callback.CB._status(response, allow_404=True)
    if "X-Consul-Index" not in response.headers:
        raise consul.ConsulException(f"Missing index header: {response.headers}")
    items: list[KVItem] | None = None
    if response.code != 404:
        try:
            items = _kv_items.decode(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise consul.ConsulException(f"Failed to decode JSON: {exc}") from exc
    return response.headers["X-Consul-Index"], items or []


def _txn_entry(kv: _TxnKV) -> KVEntry:
    value, session = kv.Value or b"", kv.Session or ""
    return KVEntry(key=kv.Key, value=value, modify_index=kv.ModifyIndex, lock_index=kv.LockIndex, session=session)


# py-consul raises these for an answer with a 4xx status; a 5xx is a plain ConsulException whose text starts with
# the code (py-consul's callback.CB._status), as does its ClientError.
_STATUS_OF_TYPE: Final = {
    consul.exceptions.BadRequest: 400,
    consul.exceptions.ACLDisabled: 401,
    consul.exceptions.ACLPermissionDenied: 403,
    consul.exceptions.NotFound: 404,
}
_LEADING_CODE: Final = re.compile(r"([1-5][0-9]{2}) ")


def status_of(exc: BaseException) -> int | None:
    """The HTTP status Consul answered with, from py-consul's exception; None when Consul did not answer."""
    for kind, code in _STATUS_OF_TYPE.items():
        if isinstance(exc, kind):
            return code
    if isinstance(exc, consul.ConsulException):
        match = _LEADING_CODE.match(str(exc))
        return int(match[1]) if match else None
    return None


def _txn_kv(op: TxnOp) -> dict[str, Any]:
    """One operation of a transaction as Consul's /v1/txn takes it."""
    kv: dict[str, Any] = {"Verb": op.verb, "Key": op.key}
    if op.verb in ("set", "cas", "lock", "unlock"):
        kv["Value"] = op.value  # msgspec encodes bytes as base64, as Consul wants
    if op.verb in ("cas", "delete-cas", "check-index"):
        kv["Index"] = op.index
    if op.session:
        kv["Session"] = op.session
    return kv


class ConsulClient:
    """Connection to one Consul agent. Methods raise ConsulError when Consul cannot answer."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8500, token: str | None = None) -> None:
        self.host = host
        self.port = port
        self._token = token or None
        self._consul: Any = None

    @property
    def token(self) -> str | None:
        return self._token

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _api(self) -> Any:
        # Created lazily: aiohttp needs a running loop.
        if self._consul is None:
            self._consul = consul.aio.Consul(host=self.host, port=self.port, token=self._token)
        return self._consul

    async def close(self) -> None:
        if self._consul is not None:
            await self._consul.close()
            self._consul = None

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except (consul.ConsulException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConsulError(f"consul {what} failed: {exc}", status_of(exc)) from exc

    # ---- KV -------------------------------------------------------------------------------------------

    async def kv_get(self, key: str) -> KVEntry | None:
        _, raw = await self._call(f"get {key}", self._api().kv.get(key))
        return _entry(raw) if raw else None

    async def kv_list(
        self, prefix: str, *, index: int | None = None, wait_s: float | None = None
    ) -> tuple[int, list[KVEntry]]:
        """Every entry under prefix. With index, a blocking query that returns when something changed."""
        idx, items = await self.kv_items(prefix, index=index, wait_s=wait_s)
        return idx, [item.entry() for item in items]

    async def kv_items(
        self, prefix: str, *, index: int | None = None, wait_s: float | None = None
    ) -> tuple[int, list[KVItem]]:
        """kv_list with each value decoded only when asked for (KVItem.entry)."""
        api = self._api()
        # The query py-consul's kv.get(prefix, recurse=True, index=index, wait=wait) makes, its answer decoded here.
        params: list[tuple[str, object]] = []
        if index:
            params.append(("index", index))
            if wait_s:
                params.append(("wait", f"{int(wait_s)}s"))
        params.append(("recurse", "1"))
        if api.dc:
            params.append(("dc", api.dc))
        if api.consistency in ("consistent", "stale"):
            params.append((api.consistency, "1"))
        request = api.http.get(_index_and_items, f"/v1/kv/{prefix}", params=params, headers=api.prepare_headers())
        idx, items = await self._call(f"list {prefix}", request)
        return int(idx), cast(list[KVItem], items)

    async def kv_keys(self, prefix: str, separator: str | None = None) -> list[str]:
        _, raw = await self._call(f"keys {prefix}", self._api().kv.get(prefix, keys=True, separator=separator))
        return cast(list[str], raw or [])

    async def kv_put(
        self,
        key: str,
        value: bytes,
        *,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        """False when a check-and-set or a lock acquisition did not apply."""
        ok = await self._call(f"put {key}", self._api().kv.put(key, value, cas=cas, acquire=acquire, release=release))
        return bool(ok)

    async def kv_delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        ok = await self._call(f"delete {key}", self._api().kv.delete(key, recurse=recurse, cas=cas))
        return bool(ok)

    async def txn(self, ops: Sequence[TxnOp]) -> tuple[bool, list[KVEntry], list[TxnError]]:
        """Applies ops atomically: (committed, results, errors). At most MAX_TXN_OPS operations.
        A rolled-back transaction is not an exception: its errors name the failing operations."""
        if len(ops) > MAX_TXN_OPS:
            raise ValueError(f"a Consul transaction holds at most {MAX_TXN_OPS} operations")
        payload = [{"KV": _txn_kv(op)} for op in ops]
        try:
            api = self._api()
            # py-consul's txn.put() sends no ACL token, so the request is made here with it; the answer is decoded
            # with msgspec (the leader's hot path: a transaction's answer lists every key it wrote).
            code, body = await api.http.put(_code_and_body, "/v1/txn", data=_json.encode(payload),
                                            headers=api.prepare_headers())  # fmt: skip
        except (consul.ConsulException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConsulError(f"consul txn failed: {exc}", status_of(exc)) from exc
        if code == 409:  # a rolled-back transaction: the errors name the failing operations
            try:
                errors = _txn_errors.decode(body).Errors or []
            except msgspec.DecodeError:
                errors = [_TxnErrorJSON(What=str(body))]
            return False, [], [TxnError(e.OpIndex, e.What) for e in errors]
        if code != 200:
            raise ConsulError(f"consul txn failed: {code} {body}", code)
        try:
            results = _txn_results.decode(body).Results or []
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConsulError(f"consul txn answer unreadable: {exc}") from exc
        return True, [_txn_entry(r.KV) for r in results if r.KV is not None], []

    # ---- sessions -------------------------------------------------------------------------------------

    async def session_create(self, name: str, checks: list[str], *, ttl_s: int | None = None) -> str:
        # lock_delay 0: a released or invalidated lock may be taken at once (fast failover); fencing by
        # term numbers, not lock-delay, keeps an old leader from acting.
        sid = await self._call(
            "session create",
            self._api().session.create(name=name, checks=checks, lock_delay=0, ttl=ttl_s, behavior="release"),
        )
        return str(sid)

    async def session_destroy(self, session_id: str) -> None:
        await self._call("session destroy", self._api().session.destroy(session_id))

    async def session_list(self) -> list[dict[str, Any]]:
        _, sessions = await self._call("session list", self._api().session.list())
        return cast(list[dict[str, Any]], sessions or [])

    async def session_info(self, session_id: str) -> dict[str, Any] | None:
        _, info = await self._call("session info", self._api().session.info(session_id))
        return cast(dict[str, Any] | None, info)

    # ---- agent services and checks ----------------------------------------------------------------------

    async def register_service(
        self,
        name: str,
        service_id: str,
        *,
        address: str,
        port: int,
        tags: list[str],
        meta: dict[str, str],
        ttl_s: float,
    ) -> str:
        """Registers a service with a TTL check the caller keeps passing; returns the check id."""
        check = {
            "CheckID": f"service:{service_id}",
            "Name": f"{name} alive",
            "TTL": f"{ttl_s}s",
            "DeregisterCriticalServiceAfter": "10m",
        }
        await self._call(
            f"register {service_id}",
            self._api().agent.service.register(
                name, service_id=service_id, address=address, port=port, tags=tags, meta=meta, check=check
            ),
        )
        return f"service:{service_id}"

    async def deregister_service(self, service_id: str) -> None:
        await self._call(f"deregister {service_id}", self._api().agent.service.deregister(service_id))

    async def check_pass(self, check_id: str, note: str = "") -> None:
        await self._call(f"ttl pass {check_id}", self._api().agent.check.ttl_pass(check_id, notes=note or None))

    async def check_fail(self, check_id: str, note: str = "") -> None:
        await self._call(f"ttl fail {check_id}", self._api().agent.check.ttl_fail(check_id, notes=note or None))

    async def health_service(
        self, name: str, *, index: int | None = None, wait_s: float | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """Catalog entries of a service with their checks (all states). Blocking when index is given."""
        wait = f"{int(wait_s)}s" if wait_s else None
        idx, raw = await self._call(f"health {name}", self._api().health.service(name, index=index, wait=wait))
        return int(idx), cast(list[dict[str, Any]], raw or [])

    async def agent_self(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self._call("agent self", self._api().agent.self()))

    async def status_leader(self) -> str:
        return str(await self._call("status leader", self._api().status.leader()))
