"""A run's processes, per kind of system: how they are started, asked to stop, killed and measured
(docs/portability.md).

- **Process groups** (Linux, macOS): the command leads a session of its own, so its group holds it and every child
  it starts; a signal to the group reaches them all, even children whose parent has exited.
- **Job Objects** (Windows): the command is put in a Job Object, which holds it and every process it starts;
  terminating the job ends them all, and closing its handle does too (`KILL_ON_JOB_CLOSE`), so the runs of an
  executor that died end with it and no guardian is needed. Asking them to stop is a CTRL_BREAK_EVENT to the
  command's console process group.
- **Process trees** (a system with neither, or a Windows that refused a Job Object): the command and the
  descendants psutil finds under it, and those it found before. A child whose parent exited before it was ever
  seen is not reached (the Job Object is what catches those on Windows).

Which applies is decided from what the system offers (`os.killpg`; `os.name`), not from its name, so the simulated
platform of the tests picks the Windows paths (tests/simulated_platform.py).
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
from typing import Any, Literal, Protocol

import psutil

log = logging.getLogger(__name__)

Kind = Literal["groups", "jobs", "trees"]


def kind() -> Kind:
    """What holds a run's processes on this system (looked up at each call: the tests take functions away)."""
    if hasattr(os, "killpg"):
        return "groups"
    return "jobs" if os.name == "nt" else "trees"


def popen_options() -> dict[str, Any]:
    """What subprocess.Popen needs to start a run so that this module can hold its processes."""
    if kind() == "groups":
        return {"start_new_session": True}
    # Its own console process group, so CTRL_BREAK_EVENT reaches it and not the executor (0 where not Windows).
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


class Command(Protocol):
    """A command just started (a subprocess.Popen, or what the shell executor's posix_spawn made)."""

    pid: int


class Run(abc.ABC):
    """The processes of one run, from its command's Popen on."""

    guarded = True  # whether the guardian must kill them if the executor dies (see guardian.py)

    def __init__(self, command: Command) -> None:
        self.pid = command.pid

    @abc.abstractmethod
    def stop(self) -> None:
        """Asks every process of the run to end (SIGTERM where there are signals)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Ends every process of the run that can be reached, at once."""

    @abc.abstractmethod
    def rss_bytes(self) -> int:
        """The resident memory of the run's processes together."""

    def close(self) -> None:  # noqa: B027 - most runs are held by nothing to let go of
        """Lets go of what holds the run (after kill())."""


class GroupRun(Run):
    """A run whose command leads its own process group (its id is the command's pid)."""

    def stop(self) -> None:
        signal_group(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        signal_group(self.pid, signal.SIGKILL)

    def rss_bytes(self) -> int:
        total = 0
        for process in psutil.process_iter(["memory_info"]):
            try:
                if os.getpgid(process.pid) == self.pid:
                    total += process.info["memory_info"].rss
            except (OSError, AttributeError):
                continue  # ended meanwhile (memory_info is None for a process psutil could not read)
        return total


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already empty
        os.killpg(pgid, sig)


class TreeRun(Run):
    """A run held as the tree of processes under its command: each look at the tree remembers who was in it, so
    a child is still killed after its parent exited, if it was seen before."""

    def __init__(self, command: Command) -> None:
        super().__init__(command)
        self._seen: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            self._seen[self.pid] = psutil.Process(self.pid)

    def stop(self) -> None:
        if os.name == "nt":  # what a console program takes as Ctrl-Break; others wait for kill() after the grace
            with contextlib.suppress(OSError):
                os.kill(self.pid, getattr(signal, "CTRL_BREAK_EVENT"))  # noqa: B009 - Windows' only
            return
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                process.terminate()

    def kill(self) -> None:
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                process.kill()

    def rss_bytes(self) -> int:
        total = 0
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def _tree(self) -> list[psutil.Process]:
        """The run's processes still running: those under the command now, and those seen before (psutil's
        is_running also checks the start time, so a reused pid is not taken for one of them)."""
        root = self._seen.get(self.pid)
        if root is not None:
            with contextlib.suppress(psutil.Error):
                for child in root.children(recursive=True):
                    self._seen.setdefault(child.pid, child)
        self._seen = {pid: p for pid, p in self._seen.items() if _running(p)}
        return list(self._seen.values())


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class JobRun(TreeRun):
    """A Windows run in a Job Object of its own (its tree is what stop() and rss_bytes() look at)."""

    guarded = False  # the job's handle closes with the executor, and the system then ends its processes

    def __init__(self, command: Command, job: _Job) -> None:
        super().__init__(command)
        self._job: _Job | None = job

    def kill(self) -> None:
        if self._job is not None:
            self._job.terminate()
        super().kill()

    def close(self) -> None:
        if self._job is not None:
            self._job.close()
            self._job = None


def adopt(popen: Command) -> Run:
    """The run of a command just started with popen_options()."""
    system = kind()
    if system == "groups":
        return GroupRun(popen)
    if system == "jobs":
        try:
            return JobRun(popen, _Job(int(getattr(popen, "_handle"))))  # noqa: B009 - Windows' Popen only
        except OSError as exc:
            log.warning("no Job Object for pid %d (%s): its children are found as a process tree", popen.pid, exc)
    return TreeRun(popen)


# ---- Windows: Job Objects through kernel32 (never run here: docs/portability.md) ------------------------------

JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9  # JOBOBJECTINFOCLASS
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000


class BasicLimits(ctypes.Structure):
    """JOBOBJECT_BASIC_LIMIT_INFORMATION (64 bytes on 64-bit Windows)."""

    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    ]


class IoCounters(ctypes.Structure):
    """IO_COUNTERS."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("Reads", "Writes", "OtherOperations", "ReadBytes", "WriteBytes", "OtherBytes")
    ]


class ExtendedLimits(ctypes.Structure):
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION (144 bytes on 64-bit Windows)."""

    _fields_ = [
        ("BasicLimitInformation", BasicLimits),
        ("IoInfo", IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


class _Job:
    """A Job Object holding one process (and whatever it starts), killed whole when closed."""

    def __init__(self, process_handle: int) -> None:
        self._kernel32: Any = getattr(ctypes, "WinDLL")("kernel32", use_last_error=True)  # noqa: B009
        self._kernel32.CreateJobObjectW.restype = ctypes.c_void_p
        self._handle: int | None = self._kernel32.CreateJobObjectW(None, None)
        if not self._handle:
            raise self._error("CreateJobObjectW")
        limits = ExtendedLimits()
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        handle = ctypes.c_void_p(self._handle)
        try:
            if not self._kernel32.SetInformationJobObject(
                handle, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION, ctypes.byref(limits), ctypes.sizeof(limits)
            ):
                raise self._error("SetInformationJobObject")
            if not self._kernel32.AssignProcessToJobObject(handle, ctypes.c_void_p(process_handle)):
                raise self._error("AssignProcessToJobObject")
        except OSError:
            self.close()
            raise

    def terminate(self) -> None:
        if self._handle is not None and not self._kernel32.TerminateJobObject(ctypes.c_void_p(self._handle), 1):
            log.warning("%s", self._error("TerminateJobObject"))

    def close(self) -> None:
        if self._handle is not None:
            self._kernel32.CloseHandle(ctypes.c_void_p(self._handle))
            self._handle = None

    @staticmethod
    def _error(call: str) -> OSError:
        error: OSError = getattr(ctypes, "WinError")(getattr(ctypes, "get_last_error")())  # noqa: B009
        error.strerror = f"{call}: {error.strerror}"
        return error
