"""The architecture is readable from `ls`: services import common, never each other; packaging lists every package."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("scheduler", "executor", "gateway")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_services_never_import_each_other() -> None:
    offenders = []
    for service in SERVICES:
        for path in (ROOT / "services" / service).rglob("*.py"):
            for name in _imports(path):
                for other in SERVICES:
                    if other != service and name.startswith(f"cronbus.services.{other}"):
                        offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_common_imports_no_service() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "common").rglob("*.py")
        for name in _imports(path)
        if name.startswith("cronbus.services")
    ]
    assert offenders == []


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, namespace in (("common", "cronbus.common"), ("services", "cronbus.services")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([namespace, *rel.parts]))
    assert found == listed


def test_every_module_opens_with_a_docstring() -> None:
    missing = [
        str(path.relative_to(ROOT))
        for top in ("common", "services")
        for path in (ROOT / top).rglob("*.py")
        if ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert missing == []
