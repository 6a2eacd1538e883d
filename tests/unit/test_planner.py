"""The planner's priority queue and the registry's targeting rules (docs/semantics.md §5), with fixed instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cronbus.common.messages import Hello
from cronbus.common.models import Job
from cronbus.services.scheduler.planner import Planner
from cronbus.services.scheduler.registry import ExecutorRegistry, NoTargetError, parse_job_tags

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def job(name: str, schedule: str, **kw: object) -> Job:
    return Job(name=name, schedule=schedule, executor="noop", created_at=T0, **kw)  # type: ignore[arg-type]


def test_pop_due_returns_each_slot_once_in_order_and_replans() -> None:
    planner = Planner()
    planner.set_job(job("a", "@every 10s"), T0)
    planner.set_job(job("b", "*/15 * * * * *"), T0)
    due = planner.pop_due(T0 + timedelta(seconds=30))
    assert [slot for _, slot in due] == sorted(slot for _, slot in due)
    assert sorted(due, key=lambda d: (d[1], d[0])) == [
        ("a", T0 + timedelta(seconds=10)),
        ("b", T0 + timedelta(seconds=15)),
        ("a", T0 + timedelta(seconds=20)),
        ("a", T0 + timedelta(seconds=30)),
        ("b", T0 + timedelta(seconds=30)),
    ]
    assert planner.peek() == T0 + timedelta(seconds=40)


def test_edit_replaces_the_plan_and_disable_or_remove_drops_it() -> None:
    planner = Planner()
    planner.set_job(job("a", "@every 10s"), T0)
    planner.set_job(job("a", "@every 1h"), T0)
    assert planner.next_fire("a") == T0 + timedelta(hours=1)
    assert len(planner) == 1
    planner.set_job(job("a", "@every 1h", disabled=True), T0)
    assert planner.next_fire("a") is None and planner.peek() is None
    planner.set_job(job("b", "@every 1h"), T0)
    planner.remove("b")
    assert planner.pop_due(T0 + timedelta(days=1)) == []


def test_planned_at_counts_the_jobs_due_at_an_instant_through_edits_removals_and_pops() -> None:
    planner = Planner()
    for name in ("a", "b", "c"):
        planner.set_job(job(name, "@every 10s"), T0)
    first = T0 + timedelta(seconds=10)
    assert planner.planned_at(first) == 3
    planner.set_job(job("a", "@every 1h"), T0)  # moved to another instant
    planner.remove("b")
    assert planner.planned_at(first) == 1
    assert planner.planned_at(T0 + timedelta(hours=1)) == 1
    assert planner.pop_due(first) == [("c", first)]
    assert planner.planned_at(first) == 0
    assert planner.planned_at(first + timedelta(seconds=10)) == 1  # c again, replanned


def test_manual_child_and_invalid_jobs_are_not_planned() -> None:
    planner = Planner()
    assert planner.set_job(job("m", "@manually"), T0) == ""
    assert planner.set_job(job("c", "", parent_job="m"), T0) == ""
    assert "never fires" in planner.set_job(job("x", "0 0 0 30 2 *"), T0)
    assert planner.peek() is None


def test_expires_at_ends_the_plan() -> None:
    planner = Planner()
    planner.set_job(job("a", "@every 10s", expires_at=T0 + timedelta(seconds=25)), T0)
    assert [slot for _, slot in planner.pop_due(T0 + timedelta(minutes=5))] == [
        T0 + timedelta(seconds=10),
        T0 + timedelta(seconds=20),
    ]


def _registry(*executors: tuple[str, dict[str, str], int]) -> ExecutorRegistry:
    registry = ExecutorRegistry(dead_after_s=3)
    for node, tags, running in executors:
        registry.hello(node.encode(), Hello(node=node, tags={**tags, "node": node}, capacity=10))
        registry.subscription(b"\x01" + f"node={node}\0".encode())
        registry.executors[node].running = running
    return registry


def test_job_tags_parse_values_and_the_lowest_count() -> None:
    assert parse_job_tags({"role": "web:2", "dc": "dc1:1"}) == ({"role": "web", "dc": "dc1"}, 1)
    assert parse_job_tags({"role": "web"}) == ({"role": "web"}, None)
    assert parse_job_tags(None) == ({}, None)


def test_no_tags_means_exactly_one_executor_the_least_busy() -> None:
    registry = _registry(("a", {}, 5), ("b", {}, 1), ("c", {}, 3))
    assert registry.select(None) == ["b"]


def test_tags_must_all_match_and_count_caps() -> None:
    registry = _registry(
        ("a", {"role": "web", "dc": "x"}, 0),
        ("b", {"role": "web", "dc": "y"}, 0),
        ("c", {"role": "webserver", "dc": "x"}, 0),
    )
    assert sorted(registry.select({"role": "web"})) == ["a", "b"]
    assert registry.select({"role": "web", "dc": "x"}) == ["a"]
    assert len(registry.select({"role": "web:1"})) == 1
    with pytest.raises(NoTargetError, match="no executor matches tags role=db"):
        registry.select({"role": "db"})


def test_unsubscribed_or_dead_executors_get_nothing() -> None:
    registry = _registry(("a", {}, 0))
    registry.hello(b"b", Hello(node="b", tags={"node": "b"}, capacity=1))  # no subscription seen yet
    assert registry.select(None) == ["a"]
    registry.subscription(b"\x00node=a\0")
    with pytest.raises(NoTargetError):
        registry.select(None)
