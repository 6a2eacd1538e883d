#!/usr/bin/env python3
"""Prints the machine's own Debian archive as a one-line apt source for another suite.

    scripts/debian_source.py bullseye
    deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] <the machine's archive> bullseye main

It reads the apt sources this machine is configured with (/etc/apt/sources.list, and sources.list.d/ in the
one-line and the deb822 formats), takes the entry of the release the machine runs (its codename, component
`main`; not -updates or -security), and changes only the suite: same archive, mirror or proxy, same keyring.
Exits 1 with the reason when there is no such entry.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

APT = Path("/etc/apt")


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str


def one_line(text: str) -> Iterator[Source]:
    """Entries of the one-line format: deb [opt=value ...] uri suite component..."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            inside, _, rest = rest[1:].partition("]")
            for option in inside.split():
                key, _, value = option.partition("=")
                options[key] = value
        fields = rest.split()
        if len(fields) >= 3:
            yield Source(fields[0], (fields[1],), tuple(fields[2:]), options.get("signed-by", ""))


def deb822(text: str) -> Iterator[Source]:
    """Stanzas of the deb822 format (Types, URIs, Suites, Components, Signed-By); disabled ones skipped."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        signed_by = fields.get("signed-by", "")
        if "\n" in signed_by or " " in signed_by.strip():
            signed_by = ""  # an inline key block: apt's default keyrings must do
        for uri in fields.get("uris", "").split():
            yield Source(uri, tuple(fields.get("suites", "").split()), tuple(fields.get("components", "").split()),
                         signed_by)  # fmt: skip


def configured() -> Iterator[Source]:
    if (APT / "sources.list").is_file():
        yield from one_line((APT / "sources.list").read_text(errors="replace"))
    parts = APT / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                yield from one_line(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                yield from deb822(path.read_text(errors="replace"))


def codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"')
    return ""


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: debian_source.py SUITE", file=sys.stderr)
        return 2
    release = codename()
    for source in configured():
        if release and release in source.suites and "main" in source.components:
            options = f"[signed-by={source.signed_by}] " if source.signed_by else ""
            print(f"deb {options}{source.uri} {sys.argv[1]} main")
            return 0
    print(
        f"No Debian source for this machine's release ({release or 'unknown'}, component main) is configured"
        f" in {APT}/sources.list or {APT}/sources.list.d/.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
