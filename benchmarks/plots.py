"""PNG plots of the scenarios (matplotlib, Agg backend), written under benchmarks/results/."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from benchmarks.scenarios import Ctx

COLORS = {"cronbus": "tab:blue", "APScheduler": "tab:orange", "Celery beat": "tab:green", "RedBeat": "tab:red"}


def _save(ctx: Ctx, figure: Figure, name: str) -> None:
    ctx.results.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(ctx.results / name, dpi=110)
    plt.close(figure)
    ctx.report.plots.append(name)


def _color(name: str) -> str | None:
    return next((c for key, c in COLORS.items() if name.startswith(key)), None)


def lag_cdf(ctx: Ctx, name: str, title: str, series: Mapping[str, Sequence[float]]) -> None:
    """Cumulative distribution of lag (ms, log scale) per system."""
    figure, ax = plt.subplots(figsize=(8, 4.5))
    for label, values in series.items():
        if not values:
            continue
        ordered = sorted(max(v, 0.01) for v in values)
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.plot(ordered, ys, label=f"{label} (n={len(ordered):,})", color=_color(label))
    ax.set_xscale("log")
    ax.set_xlabel("lag: run start - scheduled instant (ms, log)")
    ax.set_ylabel("fraction of runs")
    ax.axhline(0.99, color="grey", lw=0.6, ls=":")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save(ctx, figure, name)


def cumulative(
    ctx: Ctx, name: str, title: str, xlabel: str, series: Mapping[str, Sequence[float]], ylabel: str = "runs"
) -> None:
    """Count of events by time (seconds) per system: a herd's starts, for instance."""
    figure, ax = plt.subplots(figsize=(8, 4.5))
    for label, values in series.items():
        ordered = sorted(values)
        ax.step(ordered, range(1, len(ordered) + 1), where="post", label=label, color=_color(label))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(ctx, figure, name)


def rate(ctx: Ctx, name: str, title: str, series: Mapping[str, Sequence[tuple[float, float]]], goal: float) -> None:
    """Events per second over time (t, rate) per series, with the goal as a line."""
    figure, ax = plt.subplots(figsize=(8, 4.5))
    for label, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], label=label, color=_color(label))
    ax.axhline(goal, color="grey", ls="--", lw=0.8, label=f"goal {goal:,.0f}/s")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("runs recorded per second")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(ctx, figure, name)


def timelines(
    ctx: Ctx,
    name: str,
    title: str,
    panels: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[tuple[float, float]]]],
) -> None:
    """One panel per system: run starts (seconds since the scenario began) as a per-100 ms histogram, kills as
    red lines, and each takeover (kill -> first run of the new leader) shaded."""
    figure, axes = plt.subplots(len(panels), 1, figsize=(11, 3.2 * len(panels)), squeeze=False)
    for ax, (label, (starts, kills, gaps)) in zip(axes[:, 0], panels.items(), strict=True):
        if starts:
            bins = max(1, int((max(starts) - min(starts)) / 0.1))
            ax.hist(starts, bins=bins, color=_color(label), alpha=0.8, label="runs started / 100 ms")
        for i, kill in enumerate(kills):
            ax.axvline(kill, color="red", lw=0.8, label="SIGKILL leader" if i == 0 else None)
        for i, (begin, end) in enumerate(gaps):
            ax.axvspan(begin, end, color="red", alpha=0.12, label="takeover" if i == 0 else None)
        ax.set_title(f"{label}: {title}")
        ax.set_xlabel("time since the scenario began (s)")
        ax.set_ylabel("runs")
        ax.legend(loc="upper right", fontsize=8)
    _save(ctx, figure, name)


def bars(ctx: Ctx, name: str, title: str, ylabel: str, values: Mapping[str, float], log: bool = False) -> None:
    figure, ax = plt.subplots(figsize=(8, 4.5))
    labels = list(values)
    ax.bar(labels, [values[k] for k in labels], color=[_color(k) or "tab:gray" for k in labels])
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
    _save(ctx, figure, name)
