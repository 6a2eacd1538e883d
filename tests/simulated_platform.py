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
from collections.abc import Callable, Sequence

# What each system lacks, of what cronbus's Linux code could reach for.
MISSING_MODULES = {
    "darwin": frozenset[str](),
    "win32": frozenset({"grp", "pwd", "fcntl", "termios", "resource", "pty"}),
}
MISSING_ATTRIBUTES = {
    "darwin": [(os, "fdatasync"), (os, "pidfd_open")],
    "win32": [
        (os, "fdatasync"),
        (os, "pidfd_open"),
        (os, "O_DIRECTORY"),
        (os, "setsid"),
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


# What Windows' default (proactor) loop cannot do with the pipes of a process, refused to cronbus's code only:
# pyzmq and the loop's own sockets keep them here, where on Windows they have their own ways.
PIPE_METHODS = ("add_reader", "connect_read_pipe", "connect_write_pipe")


def _refused_to_cronbus(name: str, method: Callable[..., object]) -> Callable[..., object]:
    def refuse(*args: object, **kwargs: object) -> object:
        if str(sys._getframe(1).f_globals.get("__name__", "")).startswith("cronbus."):
            raise NotImplementedError(f"{name} on a pipe (simulated Windows)")
        return method(*args, **kwargs)

    return refuse


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


def _keep_for_psutil() -> None:
    """psutil, the one library cronbus reaches processes through, keeps its Linux implementation whole: its modules
    get copies of os, signal and select made before anything is taken away (on the real system psutil runs its
    own implementation for it)."""
    import psutil  # noqa: PLC0415 - with its platform modules, before the copies are bound

    copies = {module: _copy(module) for module in (os, signal, select)}
    for name, module in list(sys.modules.items()):
        if name == "psutil" or name.startswith("psutil."):
            for attribute, value in list(vars(module).items()):
                if isinstance(value, types.ModuleType) and value in copies:
                    setattr(module, attribute, copies[value])
    del psutil


def _copy(module: types.ModuleType) -> types.ModuleType:
    copy = types.ModuleType(module.__name__)
    copy.__dict__.update(vars(module))
    return copy


def install(platform: str) -> None:
    """Makes this interpreter look like `platform` ("macos" or "windows") to cronbus's code."""
    system = PLATFORMS[platform]
    for name in MISSING_MODULES[system]:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, _Refuse(system))
    _keep_for_psutil()
    for owner, attribute in MISSING_ATTRIBUTES[system]:
        if hasattr(owner, attribute):
            delattr(owner, attribute)
    if system == "win32":
        loop_class = asyncio.unix_events._UnixSelectorEventLoop
        loop_class.add_signal_handler = _no_signal_handlers  # type: ignore[method-assign]
        for name in PIPE_METHODS:
            setattr(loop_class, name, _refused_to_cronbus(name, getattr(loop_class, name)))


def main(argv: list[str]) -> None:
    platform, flag, module, *rest = argv
    if flag != "-m":
        raise SystemExit("usage: python -m tests.simulated_platform macos|windows -m MODULE [ARGS...]")
    install(platform)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
