"""Figures with their goals and verdicts, the results table, and summary.json / summary.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import msgspec

Verdict = Literal["PASS", "FAIL", "INFO"]


class Goal(msgspec.Struct, frozen=True):
    """A bound a figure must meet: value <= limit ("<=") or value >= limit (">=")."""

    op: Literal["<=", ">="]
    limit: float

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value <= self.limit if self.op == "<=" else value >= self.limit


def at_most(limit: float) -> Goal:
    return Goal("<=", limit)


def at_least(limit: float) -> Goal:
    return Goal(">=", limit)


class Figure(msgspec.Struct, kw_only=True):
    """One measured number. `value` is nan when the scenario could not measure it (a FAIL if it has a goal)."""

    scenario: str
    name: str
    value: float
    unit: str = ""
    goal: Goal | None = None
    note: str = ""
    verdict: Verdict = "INFO"

    def __post_init__(self) -> None:
        self.verdict = "INFO" if self.goal is None else ("PASS" if self.goal.met(self.value) else "FAIL")


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    if unit in ("/s", "runs", "jobs", "", "count") or (abs(value) >= 100 and unit not in ("x", "%")):
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def goal_text(goal: Goal | None, unit: str) -> str:
    if goal is None:
        return ""
    return f"{goal.op} {fmt(goal.limit, unit)} {unit}".rstrip()


class Report:
    """Collects figures, notes and plots for one run."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []
        self.notes: dict[str, list[str]] = {}
        self.plots: list[str] = []
        self.durations: dict[str, float] = {}

    def add(
        self,
        scenario: str,
        name: str,
        value: float | None,
        unit: str = "",
        goal: Goal | None = None,
        note: str = "",
    ) -> Figure:
        figure = Figure(
            scenario=scenario,
            name=name,
            value=math.nan if value is None else float(value),
            unit=unit,
            goal=goal,
            note=note,
        )
        self.figures.append(figure)
        return figure

    def note(self, scenario: str, text: str) -> None:
        self.notes.setdefault(scenario, []).append(text)

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        return [
            (f.scenario, f.name, f"{fmt(f.value, f.unit)} {f.unit}".rstrip(), goal_text(f.goal, f.unit), f.verdict,
             f.note)
            for f in self.figures
        ]  # fmt: skip

    def table(self) -> str:
        header = ("scenario", "figure", "value", "goal", "verdict", "note")
        rows = [header, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = []
        for i, row in enumerate(rows):
            cells = [row[c].ljust(widths[c]) for c in range(5)]
            lines.append("  ".join(cells) + ("  " + row[5] if row[5] else ""))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = ["| scenario | figure | value | goal | verdict | note |", "| --- | --- | ---: | --- | --- | --- |"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows()]
        return "\n".join(lines)

    def counts(self) -> dict[str, int]:
        out = {"PASS": 0, "FAIL": 0, "INFO": 0}
        for figure in self.figures:
            out[figure.verdict] += 1
        return out

    def write(self, directory: Path, meta: dict[str, object]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        summary = {
            **meta,
            "verdicts": self.counts(),
            "figures": self.figures,
            "notes": self.notes,
            "plots": self.plots,
            "scenario_seconds": self.durations,
        }
        (directory / "summary.json").write_bytes(msgspec.json.format(msgspec.json.encode(summary)) + b"\n")
        machine = meta.get("machine", {})
        md = [
            "# cronbus benchmark summary",
            "",
            f"Run: {meta.get('started')} ({'--quick' if meta.get('quick') else 'full'}), "
            f"{meta.get('duration_s', 0):.0f} s. Machine: {_machine_line(machine)}.",
            "",
            self.markdown(),
            "",
        ]
        for scenario, notes in self.notes.items():
            md.append(f"**{scenario}**")
            md.append("")
            md += [f"- {n}" for n in notes]
            md.append("")
        if self.plots:
            md.append("Plots: " + ", ".join(f"[{p}]({p})" for p in self.plots))
            md.append("")
        (directory / "summary.md").write_text("\n".join(md))


def _machine_line(machine: object) -> str:
    if not isinstance(machine, dict):
        return ""
    return f"{machine.get('nproc')} CPUs ({machine.get('cpu')}), {machine.get('ram')} RAM"
