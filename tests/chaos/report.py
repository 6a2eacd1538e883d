"""`python -m tests.chaos.report [pytest args]`: runs the chaos suite and prints what each fault did, as a table.

pytest's own output (with the service logs of failed tests) goes to tests/artifacts/chaos-pytest.log; the
figures each test wrote go to tests/artifacts/chaos.jsonl. Exit code: pytest's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.chaos.figures import FIGURES_ENV, FIGURES_FILE, details, load, table

ROOT = Path(__file__).resolve().parents[2]
PYTEST_LOG = ROOT / "tests" / "artifacts" / "chaos-pytest.log"
SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|error|skipped|xfailed|xpassed).*) in [\d.]+s")
DURATION = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)")


def main(argv: list[str]) -> int:
    figures = Path(os.environ.get(FIGURES_ENV) or FIGURES_FILE)
    figures.unlink(missing_ok=True)
    PYTEST_LOG.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", "tests/chaos", "-q", "-p", "no:cacheprovider", "--durations=0", *argv]
    print(f"running: {' '.join(command[2:])}  (output: {PYTEST_LOG.relative_to(ROOT)})", flush=True)
    started = time.monotonic()
    with PYTEST_LOG.open("wb") as log:
        code = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    elapsed = time.monotonic() - started
    rows = load(figures)
    print()
    print(table(rows) if rows else "no figures were written")
    extra = details(rows)
    if extra:
        print()
        print(extra)
    output = PYTEST_LOG.read_text(errors="replace").splitlines()
    spent: dict[str, float] = {}
    for line in output:
        match = DURATION.match(line)
        if match:
            name = match[3].split("::")[-1]
            spent[name] = spent.get(name, 0.0) + float(match[1])
    if spent:
        print()
        print("test durations (setup + call + teardown):")
        for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
            print(f"  {seconds:6.1f}s  {name}")
    summary = next((m[1] for line in reversed(output) if (m := SUMMARY.match(line))), f"pytest exited {code}")
    print()
    print(f"{summary} in {elapsed:.0f}s wall")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
