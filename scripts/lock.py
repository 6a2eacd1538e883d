#!/usr/bin/env python3
"""Makes or checks the lock files in requirements/ from pyproject.toml (and requirements/build.in).

    .venv/bin/python scripts/lock.py                 # remake the locks, keeping every pin that still fits
    .venv/bin/python scripts/lock.py --upgrade       # remake them with the newest versions the ranges allow
    .venv/bin/python scripts/lock.py -P mypy         # move one package to its newest allowed version
    .venv/bin/python scripts/lock.py --check         # fail when a lock disagrees with pyproject.toml

The locks are made by `uv pip compile` (universal: one file for Linux, macOS and Windows; hashed; no index
address written). The index is the machine's own: pip's configured index-url, when there is one, else uv's
default; certificates are the system's and pip's configured CA bundle. --check resolves again from the
committed locks and compares: every pin must come out the same, and every hash of the lock must be one the index
gives for that pin (a pin changed by hand keeps the old hashes).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIX = "run `.venv/bin/python scripts/lock.py` and commit requirements/"


@dataclass(frozen=True)
class Lock:
    """One lock file and what uv compiles it from."""

    path: str
    sources: tuple[str, ...]
    extra_args: tuple[str, ...] = ()


# dev.txt is what scripts/setup.sh installs (every extra: tests, lint, benchmarks, Dkron's clients); runtime.txt is
# the service's own dependencies, the broker executors' clients (the `executors` extra) and OpenTelemetry (the
# `tracing` extra) at the same versions
# (the Dockerfile); build.txt is pip and the build backend at the same versions, installed first, so that the
# project and any package published only as source are built with them, not with whatever an isolated build
# environment would fetch.
LOCKS = (
    Lock("requirements/dev.txt", ("pyproject.toml", "requirements/build.in"), ("--all-extras",)),
    Lock(
        "requirements/runtime.txt",
        ("pyproject.toml", "requirements/build.in"),
        ("--extra", "executors", "--extra", "tracing", "-c", "requirements/dev.txt"),
    ),
    Lock("requirements/build.txt", ("requirements/build.in",), ("-c", "requirements/dev.txt")),
)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")
_HASH_LINE = re.compile(r" \\\n\s*--hash=sha256:[0-9a-f]{64}")


@dataclass
class Pin:
    version: str
    hashes: set[str]


def parse(text: str) -> dict[tuple[str, str], Pin]:
    """A hashed requirements file as {(name, marker): Pin}; a name may appear once per environment marker."""
    pins: dict[tuple[str, str], Pin] = {}
    current: Pin | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _PIN.match(stripped)
        if match:
            name = re.sub(r"[-_.]+", "-", match[1]).lower()
            current = Pin(match[2], set())
            pins[(name, (match[3] or "").strip())] = current
            continue
        hashed = _HASH.search(stripped)
        if hashed and current is not None:
            current.hashes.add(hashed[1])
            continue
        raise SystemExit(f"unexpected line in a lock file: {stripped!r}; {FIX}")
    return pins


def disagreements(committed: dict[tuple[str, str], Pin], fresh: dict[tuple[str, str], Pin]) -> list[str]:
    """What differs between a committed lock and a fresh resolution started from it (empty: they agree).

    New files published for a pinned version only add hashes to the fresh side, so the committed hashes need
    only be a subset; a hash the index does not give for the pin means the pin was changed by hand."""
    problems = []
    for key in sorted(committed.keys() | fresh.keys()):
        name, marker = key
        label = f"{name} ({marker})" if marker else name
        old, new = committed.get(key), fresh.get(key)
        if new is None:
            problems.append(f"{label}=={old.version if old else '?'} is locked but no longer needed")
        elif old is None:
            problems.append(f"{label} is needed ({new.version}) but not locked")
        elif old.version != new.version:
            problems.append(f"{label} is locked at {old.version}, pyproject.toml now resolves it to {new.version}")
        elif not old.hashes:
            problems.append(f"{label}=={old.version} has no hashes")
        elif not old.hashes <= new.hashes:
            problems.append(f"{label}=={old.version}: the lock's hashes are not the index's for this version")
    return problems


def pip_config() -> dict[str, str]:
    """pip's configuration on this machine (pip.conf files and PIP_* variables), as {"index-url": ..., ...}."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    found = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        found[key.rpartition(".")[2]] = value.strip().strip("'\"")
    for name in ("index-url", "cert"):
        if os.environ.get(f"PIP_{name.upper().replace('-', '_')}"):
            found[name] = os.environ[f"PIP_{name.upper().replace('-', '_')}"]
    return found


def uv_environment() -> tuple[list[str], dict[str, str]]:
    """uv's arguments and environment for the machine's own index and certificates, as pip has them: its
    index-url (else uv's default), and its CA bundle (a proxy or mirror that signs with a local CA)."""
    config = pip_config()
    args = ["--system-certs"]
    if config.get("index-url") and "UV_DEFAULT_INDEX" not in os.environ:
        args += ["--default-index", config["index-url"]]
    env = dict(os.environ)
    if config.get("cert") and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = config["cert"]
    return args, env


def find_uv() -> str:
    for candidate in (Path(sys.executable).with_name("uv"), shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise SystemExit(
        "uv not found: scripts/setup.sh installs it into .venv from requirements/dev.txt"
        " (or `pip install uv` for a first lock)"
    )


def compile_lock(lock: Lock, output: Path, upgrade: list[str], constraints: dict[str, str] | None = None) -> None:
    """Resolves `lock` into `output`; uv keeps the pins it finds there. `constraints` replaces a lock's -c files."""
    extra = [(constraints or {}).get(arg, arg) for arg in lock.extra_args]
    command = [
        find_uv(), "pip", "compile", *lock.sources, *extra,
        "--universal", "--python-version", "3.11", "--generate-hashes", "--quiet",
        "--custom-compile-command", ".venv/bin/python scripts/lock.py",
        "-o", str(output), *upgrade,
    ]  # fmt: skip
    args, env = uv_environment()
    done = subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"uv pip compile failed for {lock.path}:\n{done.stderr.strip()}")


def check() -> int:
    failed = False
    with tempfile.TemporaryDirectory() as folder:
        fresh_paths: dict[str, str] = {}
        for lock in LOCKS:
            committed = ROOT / lock.path
            if not committed.is_file():
                print(f"{lock.path} is missing; {FIX}", file=sys.stderr)
                failed = True
                continue
            fresh = Path(folder) / Path(lock.path).name
            fresh_paths[lock.path] = str(fresh)
            # The seed keeps the committed pins but not their hashes: uv would copy those over unchecked.
            fresh.write_text(_HASH_LINE.sub("", committed.read_text()))
            compile_lock(lock, fresh, [], constraints=fresh_paths)
            problems = disagreements(parse(committed.read_text()), parse(fresh.read_text()))
            if problems:
                failed = True
                print(f"{lock.path} disagrees with pyproject.toml:", file=sys.stderr)
                for problem in problems:
                    print(f"  - {problem}", file=sys.stderr)
    if failed:
        print(f"To fix it, {FIX}.", file=sys.stderr)
        return 1
    print("requirements/ agrees with pyproject.toml")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; change nothing")
    parser.add_argument("--upgrade", "-U", action="store_true", help="newest allowed versions of everything")
    parser.add_argument("--upgrade-package", "-P", action="append", default=[], metavar="NAME")
    args = parser.parse_args()
    if args.check:
        return check()
    upgrade = ["--upgrade"] if args.upgrade else [f"--upgrade-package={name}" for name in args.upgrade_package]
    for lock in LOCKS:
        compile_lock(lock, ROOT / lock.path, upgrade)
        print(f"wrote {lock.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
