"""The StatsD wire format of a Registry: counters as increases, gauges as values, labels as name parts or tags."""

from __future__ import annotations

import pytest

from cronbus.common.errors import SettingsError
from cronbus.common.metrics import Registry
from cronbus.common.statsd import Deltas, Sample, datagrams, dogstatsd_line, parse_dog_tags, statsd_line


def registry() -> tuple[Registry, Deltas]:
    r = Registry()
    return r, Deltas(r)


def test_counters_are_sent_as_their_increase_and_not_when_unchanged() -> None:
    r, deltas = registry()
    runs = r.counter("runs_total", "Runs.", labels=("status",))
    plain = r.counter("fires_total", "Fires.")
    runs.inc(status="success")
    runs.inc(2, status="failed")
    assert deltas.samples() == [
        Sample("runs_total", (("status", "failed"),), 2.0, "c"),
        Sample("runs_total", (("status", "success"),), 1.0, "c"),
    ]  # an unlabelled counter at 0 sends nothing
    runs.inc(status="success")
    plain.inc(0.5)
    assert deltas.samples() == [
        Sample("runs_total", (("status", "success"),), 1.0, "c"),
        Sample("fires_total", (), 0.5, "c"),
    ]
    assert deltas.samples() == []


def test_gauges_are_sent_every_time_and_histograms_as_count_and_sum_increases() -> None:
    r, deltas = registry()
    r.gauge("capacity", "Capacity.", lambda: 16)
    leader = r.gauge("leader", "Leader.")
    duration = r.histogram("run_duration_seconds", "Durations.", (1.0,))
    duration.observe(0.25, status="success")
    duration.observe(2.0, status="success")
    status = (("status", "success"),)
    assert deltas.samples() == [
        Sample("capacity", (), 16.0, "g"),
        Sample("leader", (), 0.0, "g"),
        Sample("run_duration_seconds_count", status, 2.0, "c"),
        Sample("run_duration_seconds_sum", status, 2.25, "c"),
    ]
    duration.observe(0.5, status="success")
    leader.set(1)
    assert deltas.samples()[1:] == [
        Sample("leader", (), 1.0, "g"),
        Sample("run_duration_seconds_count", status, 1.0, "c"),
        Sample("run_duration_seconds_sum", status, 0.5, "c"),
    ]


def test_plain_statsd_folds_labels_into_the_name() -> None:
    sample = Sample("cronbus_gateway_requests_total", (("method", "GET"), ("route", "/v1/jobs/{job}")), 3, "c")
    assert statsd_line(sample) == "cronbus_gateway_requests_total.method.GET.route._v1_jobs__job_:3|c"
    assert statsd_line(Sample("cronbus_leader", (), 1, "g")) == "cronbus_leader:1|g"
    assert statsd_line(Sample("x_sum", (), 0.1 + 0.2, "c")) == "x_sum:0.3|c"


def test_dogstatsd_sends_labels_and_the_configured_tags_as_tags() -> None:
    sample = Sample("cronbus_executor_runs_finished_total", (("status", "success"),), 1, "c")
    assert dogstatsd_line(sample, ("env:prod", "dc:eu")) == (
        "cronbus_executor_runs_finished_total:1|c|#status:success,env:prod,dc:eu"
    )
    assert dogstatsd_line(Sample("g", (("route", "a|b,c"),), 2, "g"), ()) == "g:2|g|#route:a_b_c"
    assert dogstatsd_line(Sample("g", (), 2, "g"), ()) == "g:2|g"


def test_lines_are_packed_into_datagrams_within_the_limit() -> None:
    lines = [f"metric_{i}:1|c" for i in range(300)]
    packed = datagrams(lines, limit=100)
    assert all(len(d) <= 100 for d in packed)
    assert b"\n".join(packed).decode().split("\n") == lines
    assert datagrams(["x" * 150, "y:1|c"], limit=100) == [b"x" * 150, b"y:1|c"]
    assert datagrams([]) == []


def test_dog_tags_are_checked() -> None:
    assert parse_dog_tags(["env:prod", " team:ops "]) == ("env:prod", "team:ops")
    for bad in ("", "a,b", "a|b", "a b"):
        with pytest.raises(SettingsError, match="--dog-statsd-tags"):
            parse_dog_tags([bad])
