"""scripts/debian_source.py: the machine's own Debian archive, from either apt source format."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIRROR = "http://mirror.internal.example/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cronbus_debian_source", ROOT / "scripts" / "debian_source.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


source = _module()


def _apt(tmp_path: Path, files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(source, "APT", tmp_path)
    monkeypatch.setattr(source, "codename", lambda: "bookworm")
    return tmp_path


def _run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["debian_source.py", "bullseye"])
    code = source.main()
    out, err = capsys.readouterr()
    return code, out.strip(), err


def test_a_deb822_source_keeps_its_mirror_and_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    debian = (
        "Types: deb\n# a comment inside the stanza\nURIs: " + MIRROR + "\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: " + KEYRING + "\n\n"
        "Types: deb\nURIs: http://security.internal.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n"
    )
    vendor = "deb https://vendor.example/apt cloud-sdk-bookworm main\n"
    _apt(tmp_path, {"sources.list.d/debian.sources": debian, "sources.list.d/other.list": vendor}, monkeypatch)
    assert _run(capsys, monkeypatch) == (0, f"deb [signed-by={KEYRING}] {MIRROR} bullseye main", "")


def test_a_one_line_source_with_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _apt(tmp_path, {"sources.list": (
        "# deb http://old.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        f"deb [arch=amd64 signed-by={KEYRING}] {MIRROR} bookworm main contrib\n"
    )}, monkeypatch)  # fmt: skip
    assert _run(capsys, monkeypatch)[:2] == (0, f"deb [signed-by={KEYRING}] {MIRROR} bullseye main")


def test_no_source_of_the_release_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _apt(tmp_path, {"sources.list.d/node.sources": "Types: deb\nURIs: https://n.example\nSuites: nodistro\n"
                    "Components: main\n", "sources.list.d/off.sources": f"Types: deb\nURIs: {MIRROR}\n"
                    "Suites: bookworm\nComponents: main\nEnabled: no\n"}, monkeypatch)  # fmt: skip
    code, out, err = _run(capsys, monkeypatch)
    assert (code, out) == (1, "")
    assert "No Debian source for this machine's release (bookworm, component main)" in err
