"""A simulated platform: this Linux Python with what macOS or Windows lacks made unavailable.

`sys.platform` stays "linux" (the standard library and the C extensions choose their implementation by it, and
cannot be simulated). It checks one thing honestly: that cronbus's code does not touch those functions and modules
on the paths under test (an import, a command). It does not check that the code works on a real macOS or Windows
(docs/portability.md says what has not been run there). Run a module under it:
`python -m tests.simulated_platform windows -m cronbus.services jobs list`.
"""

from __future__ import annotations

import asyncio
import asyncio.unix_events
import importlib.abc
import importlib.machinery
import os
import runpy
import select
import signal
import sys
import types
from collections.abc import Sequence

# What each system lacks, of what cronbus's Linux code could reach for.
MISSING_MODULES = {
    "darwin": frozenset[str](),
    "win32": frozenset({"grp", "pwd", "fcntl", "termios", "resource", "pty"}),
}
MISSING_ATTRIBUTES = {
    "darwin": [(os, "fdatasync")],
    "win32": [
        (os, "fdatasync"),
        (os, "killpg"),
        (os, "getpgid"),
        (os, "getgrouplist"),
        (os, "geteuid"),
        (signal, "SIGKILL"),
        (signal, "SIGHUP"),
        (select, "PIPE_BUF"),
    ],
}
PLATFORMS = {"macos": "darwin", "windows": "win32"}


def _no_signal_handlers(*_args: object, **_kwargs: object) -> None:
    raise NotImplementedError  # what Windows' event loops raise for add_signal_handler


class _Refuse(importlib.abc.MetaPathFinder):
    """Refuses the modules the system lacks to cronbus's own code. Third-party packages keep theirs: on this
    interpreter they run their Linux implementation, where on the real system they would run another."""

    def __init__(self, system: str) -> None:
        self.system = system
        self.names = MISSING_MODULES[system]

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".", maxsplit=1)[0] in self.names and _importer().startswith("cronbus."):
            raise ModuleNotFoundError(f"No module named {fullname!r} (simulated {self.system})", name=fullname)
        return None


def _importer() -> str:
    """The module whose import statement is being run (the first frame outside the import machinery)."""
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
        frame = frame.f_back
    return "" if frame is None else str(frame.f_globals.get("__name__", ""))


def install(platform: str) -> None:
    """Makes this interpreter look like `platform` ("macos" or "windows") to cronbus's code."""
    system = PLATFORMS[platform]
    for name in MISSING_MODULES[system]:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, _Refuse(system))
    for owner, attribute in MISSING_ATTRIBUTES[system]:
        if hasattr(owner, attribute):
            delattr(owner, attribute)
    if system == "win32":
        asyncio.unix_events._UnixSelectorEventLoop.add_signal_handler = _no_signal_handlers  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    platform, flag, module, *rest = argv
    if flag != "-m":
        raise SystemExit("usage: python -m tests.simulated_platform macos|windows -m MODULE [ARGS...]")
    install(platform)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
