"""Chaos fixtures: `figures` collects what each fault did; the session prints the table and writes JSON lines."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.chaos.figures import Figures, append, details, figures_file, table
from tests.chaos.support import HISTORY

_ROWS = pytest.StashKey[list[Figures]]()
_TRUNCATED = pytest.StashKey[bool]()


class FigureSheet:
    """The figure rows of one test; written when the test ends, whatever its outcome."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.rows: list[Figures] = []

    def add(self, row: Figures) -> Figures:
        row.test = self.test
        self.rows.append(row)
        shown = {k: v for k, v in msgspec_fields(row).items() if k not in ("test", "outcome", "duration_s")}
        print(f"chaos figures: {shown}")
        return row


def msgspec_fields(row: Figures) -> dict[str, object]:
    return {f: getattr(row, f) for f in row.__struct_fields__}


@pytest.fixture(autouse=True)
def _clients_closed(closed_clients: None) -> None:
    """See tests/conftest.py: closed_clients."""


@pytest.fixture(params=["consul", "postgresql"])
def history_store(request: pytest.FixtureRequest) -> Iterator[tuple[str, ...]]:
    """The test runs once per history store: its schedulers' arguments for it. With PostgreSQL (a new database on
    the session's cluster), finished records move there 1 s after they end, so moves overlap the faults, and the
    test reads its records from both places (support.all_executions)."""
    if request.param == "consul":
        yield ()
        return
    HISTORY.dsn = request.getfixturevalue("postgres_dsn")
    try:
        yield ("--history-store", HISTORY.dsn, "--history-settle", "1s")
    finally:
        HISTORY.dsn = ""


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[FigureSheet]:
    config = request.config
    path = figures_file()
    if not config.stash.get(_TRUNCATED, False):
        # One file per pytest session: what it holds is the last run's figures.
        path.unlink(missing_ok=True)
        config.stash[_TRUNCATED] = True
    sheet = FigureSheet(request.node.nodeid)
    started = time.monotonic()
    yield sheet
    elapsed = time.monotonic() - started
    report = getattr(request.node, "rep_call", None)
    outcome = "failed"
    if report is not None:
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
    for row in sheet.rows:
        row.duration_s = elapsed
        row.outcome = outcome
    append(sheet.rows, path)
    config.stash.setdefault(_ROWS, []).extend(sheet.rows)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    terminalreporter.section("chaos figures")
    terminalreporter.write_line(table(rows))
    extra = details(rows)
    if extra:
        terminalreporter.write_line("")
        terminalreporter.write_line(extra)
    terminalreporter.write_line(f"(JSON lines: {figures_file()})")
