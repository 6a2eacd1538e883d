"""The figures each chaos test reports (runs expected, executed, duplicated, missed by policy, lost) and the table."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import msgspec

FIGURES_FILE: Final = Path(__file__).resolve().parents[1] / "artifacts" / "chaos.jsonl"
FIGURES_ENV: Final = "CRONBUS_CHAOS_FIGURES"  # another file for the figures (the report runner's choice)

Detail = int | float | str | bool


class Figures(msgspec.Struct, kw_only=True):
    """What one fault did to the runs it hit. A "run" is one (job, slot) or one request, as `fault` says.

    executed: ran (or was stored) exactly as asked; duplicated: ran (or was stored) more than once or in a
    form nobody asked for; missed: did not run, with a record saying why (misfire policy, refused
    request); lost: neither ran nor left a record, or stays unfinished for good.
    """

    fault: str
    expected: int = 0
    executed: int = 0
    duplicated: int = 0
    missed: int = 0
    lost: int = 0
    details: dict[str, Detail] = {}
    test: str = ""
    duration_s: float = 0.0
    outcome: str = ""  # passed | failed | xfailed | xpassed | skipped, filled in at teardown


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Figures)


def figures_file() -> Path:
    return Path(os.environ.get(FIGURES_ENV) or FIGURES_FILE)


def append(rows: Iterable[Figures], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        for row in rows:
            file.write(_encoder.encode(row) + b"\n")


def load(path: Path) -> list[Figures]:
    if not path.exists():
        return []
    return [_decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


COLUMNS: Final = ("fault", "expected", "executed", "duplicated", "missed by policy", "lost", "time s", "result")


def table(rows: Iterable[Figures]) -> str:
    """A plain-text table, one line per figure row, then the details of each row."""
    body = [
        (
            r.fault,
            str(r.expected),
            str(r.executed),
            str(r.duplicated),
            str(r.missed),
            str(r.lost),
            f"{r.duration_s:.0f}",
            r.outcome or "?",
        )
        for r in rows
    ]
    widths = [max([len(h), *(len(line[i]) for line in body)]) for i, h in enumerate(COLUMNS)]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(COLUMNS), "-+-".join("-" * w for w in widths)]
    out += [line(cells) for cells in body]
    return "\n".join(out)


def details(rows: Iterable[Figures]) -> str:
    lines = []
    for row in rows:
        if row.details:
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in row.details.items())
            lines.append(f"- {row.fault}: {shown}")
    return "\n".join(lines)


def _fmt(value: Detail) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
