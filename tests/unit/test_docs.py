"""The project's docs hold together: what code cites exists, and links between the docs resolve.

Comments cite `docs/<name>.md §N` or `docs/<name>.md, "Heading"`; a doc links another as `[text](name.md#anchor)`.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SOURCES = [
    p
    for top in ("common", "services", "tests", "benchmarks", "scripts")
    for p in (ROOT / top).rglob("*.py")
    if p.name != "test_docs.py"
]
CITATION = re.compile(r'docs/(\w[\w-]*\.md)(?:,? §(\d+)|, "([^"]+)")?')
LINK = re.compile(r"\]\(((?!https?:)[^)#\s]*)(?:#([^)\s]+))?\)")


def _anchor(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's) gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings(doc: Path) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^#+ (.+)$", doc.read_text(), re.MULTILINE)]


def test_every_doc_that_code_cites_has_the_section_it_names() -> None:
    problems = []
    for source in SOURCES:
        for m in CITATION.finditer(source.read_text()):
            name, number, title = m.groups()
            doc = DOCS / name
            if not doc.is_file():
                problems.append(f"{source.relative_to(ROOT)}: docs/{name} does not exist")
                continue
            headings = _headings(doc)
            if number and not any(h.startswith(f"{number}. ") for h in headings):
                problems.append(f"{source.relative_to(ROOT)}: docs/{name} has no §{number}")
            if title and title not in headings:
                problems.append(f"{source.relative_to(ROOT)}: docs/{name} has no heading {title!r}")
    assert problems == []


def test_links_between_the_docs_resolve() -> None:
    problems = []
    for doc in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        for m in LINK.finditer(doc.read_text()):
            target, anchor = m.groups()
            path = (doc.parent / target).resolve() if target else doc
            if not path.exists():
                problems.append(f"{doc.name}: {target} does not exist")
            elif anchor and path.suffix == ".md" and anchor not in {_anchor(h) for h in _headings(path)}:
                problems.append(f"{doc.name}: {target or doc.name} has no heading for #{anchor}")
    assert problems == []
