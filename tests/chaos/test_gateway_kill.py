"""Kill -9 the gateway in the middle of many concurrent POST /v1/jobs: no half-written job. Every stored job
decodes and validates and is exactly one of the bodies sent; every write answered 201 is stored."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import msgspec

from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store, StoredJob
from cronbus.common.errors import ValidationError
from cronbus.common.models import now_utc
from cronbus.common.validation import validate_job
from tests.chaos.conftest import FigureSheet
from tests.chaos.figures import Figures
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client

SOLO = 240  # names written once
CONTENDED, WRITERS = 12, 5  # names written concurrently by several writers with different bodies
PARALLEL = 24
KILL_AFTER = 80  # acknowledged writes before the kill


def _body(name: str, writer: int) -> dict[str, Any]:
    """A job body whose every field depends on (name, writer), so a mix of two bodies is visible."""
    return {
        "name": name,
        "schedule": f"@every {10 + writer}s",
        "timezone": ["UTC", "Europe/Berlin", "Asia/Tokyo", "America/New_York", "Australia/Lord_Howe"][writer % 5],
        "executor": "shell",
        "executor_config": {"command": f"echo {name} from writer {writer}", "shell": "true", "env": f"W={writer}"},
        "metadata": {"writer": str(writer), "padding": "x" * (200 * (writer + 1))},
        "tags": {"role": f"w{writer}"},
        "retries": writer,
        "owner": f"writer-{writer}@example.com",
        "disabled": True,  # nothing to run: this test is about what is stored
    }


def _matches(stored: dict[str, Any], body: dict[str, Any]) -> bool:
    return all(stored.get(key) == value for key, value in body.items())


def _audit(stored: list[StoredJob], bodies: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[str]]:
    """The stored jobs that are half written (do not decode or validate), and those that match no body sent."""
    half_written: list[str] = []
    unknown: list[str] = []
    for entry in stored:
        if entry.job is None:
            half_written.append(f"{entry.name}: {entry.problem}")
            continue
        try:
            validate_job(entry.job, existing=entry.job, now=now_utc())
        except ValidationError as exc:
            half_written.append(f"{entry.name}: {exc}")
            continue
        as_dict = msgspec.to_builtins(entry.job)
        if sum(_matches(as_dict, body) for body in bodies.get(entry.name, [])) != 1:
            unknown.append(entry.name)
    return half_written, unknown


async def test_gateway_killed_during_writes_leaves_no_half_written_job(
    cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet
) -> None:
    store = Store(client(fresh_consul))
    try:
        gateway, url = cluster.gateway("--log-level", "info", name="g1")
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:

            async def up() -> bool:
                try:
                    return (await http.get("/v1/jobs")).status_code == 200
                except httpx.TransportError:
                    return False

            await async_wait_until(up, timeout_s=20, what="the gateway serving")
            bodies: dict[str, list[dict[str, Any]]] = {
                f"solo-{i:03d}": [_body(f"solo-{i:03d}", 0)] for i in range(SOLO)
            }
            for i in range(CONTENDED):
                bodies[f"race-{i:02d}"] = [_body(f"race-{i:02d}", w) for w in range(WRITERS)]
            writes = [(name, body) for name, group in bodies.items() for body in group]
            # Interleave so the contended names are written while the kill comes.
            order = list(itertools.chain.from_iterable(itertools.zip_longest(writes[:SOLO], writes[SOLO:])))
            sends = [w for w in order if w is not None]
            acked: list[tuple[str, dict[str, Any]]] = []
            failed: list[str] = []
            killed = asyncio.Event()
            gate = asyncio.Semaphore(PARALLEL)

            async def send(name: str, body: dict[str, Any]) -> None:
                async with gate:
                    if killed.is_set():
                        failed.append(name)
                        return
                    try:
                        response = await http.post("/v1/jobs", json=body)
                    except httpx.TransportError:
                        failed.append(name)
                        return
                    if response.status_code == 201:
                        acked.append((name, body))
                        if len(acked) >= KILL_AFTER and not killed.is_set():
                            killed.set()
                            gateway.kill()  # SIGKILL, with PARALLEL requests in flight
                    else:
                        failed.append(f"{name}:{response.status_code}")

            await asyncio.gather(*(send(name, body) for name, body in sends))
        assert killed.is_set(), "the gateway was never killed"

        _, stored = await store.list_jobs()
        half_written, unknown = _audit(stored, bodies)
        stored_names = {entry.name for entry in stored}
        lost_acked = sorted({name for name, _ in acked if name not in stored_names})
        figures.add(
            Figures(
                fault=f"gateway kill -9 during {len(sends)} concurrent job writes ({PARALLEL} in flight)",
                expected=len(sends),
                executed=len(acked),
                duplicated=len(half_written) + len(unknown),
                missed=len(failed),
                lost=len(lost_acked),
                details={
                    "stored_jobs": len(stored),
                    "stored_unacknowledged": len(stored_names - {name for name, _ in acked}),
                    "half_written": len(half_written),
                    "matching_no_body": len(unknown),
                },
            )
        )
        assert half_written == [], half_written[:5]
        assert unknown == [], unknown[:5]
        assert lost_acked == [], lost_acked[:5]
    finally:
        await store.consul.close()
