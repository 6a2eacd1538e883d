"""A typed asyncio facade over py-consul: every Consul call cronbus makes goes through ConsulClient."""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import Any, cast

import aiohttp
import consul
import consul.aio
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


def _txn_entry(kv: _TxnKV) -> KVEntry:
    value, session = kv.Value or b"", kv.Session or ""
    return KVEntry(key=kv.Key, value=value, modify_index=kv.ModifyIndex, lock_index=kv.LockIndex, session=session)


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
            raise ConsulError(f"consul {what} failed: {exc}") from exc

    # ---- KV -------------------------------------------------------------------------------------------

    async def kv_get(self, key: str) -> KVEntry | None:
        _, raw = await self._call(f"get {key}", self._api().kv.get(key))
        return _entry(raw) if raw else None

    async def kv_list(
        self, prefix: str, *, index: int | None = None, wait_s: float | None = None
    ) -> tuple[int, list[KVEntry]]:
        """Every entry under prefix. With index, a blocking query that returns when something changed."""
        wait = f"{int(wait_s)}s" if wait_s else None
        idx, raw = await self._call(f"list {prefix}", self._api().kv.get(prefix, recurse=True, index=index, wait=wait))
        return int(idx), [_entry(r) for r in raw or []]

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
        payload = []
        for op in ops:
            kv: dict[str, Any] = {"Verb": op.verb, "Key": op.key}
            if op.verb in ("set", "cas", "lock", "unlock"):
                kv["Value"] = op.value  # msgspec encodes bytes as base64, as Consul wants
            if op.verb in ("cas", "delete-cas", "check-index"):
                kv["Index"] = op.index
            if op.session:
                kv["Session"] = op.session
            payload.append({"KV": kv})
        try:
            api = self._api()
            # py-consul's txn.put() sends no ACL token, so the request is made here with it; the answer is decoded
            # with msgspec (the leader's hot path: a transaction's answer lists every key it wrote).
            code, body = await api.http.put(_code_and_body, "/v1/txn", data=_json.encode(payload),
                                            headers=api.prepare_headers())  # fmt: skip
        except (consul.ConsulException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConsulError(f"consul txn failed: {exc}") from exc
        if code == 409:  # a rolled-back transaction: the errors name the failing operations
            try:
                errors = _txn_errors.decode(body).Errors or []
            except msgspec.DecodeError:
                errors = [_TxnErrorJSON(What=str(body))]
            return False, [], [TxnError(e.OpIndex, e.What) for e in errors]
        if code != 200:
            raise ConsulError(f"consul txn failed: {code} {body}")
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
