"""The executor's platform layer (services/executor/processes.py): which kind of system it takes this one for, and
the Windows parts that can be checked here (the rest is in docs/portability.md: never run on a real Windows)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from cronbus.common.executor_config import parse_shell_config, shell_argv
from cronbus.services.executor import guardian, processes


def test_the_kind_of_system_follows_what_it_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert processes.kind() == "groups"
    assert processes.popen_options() == {"start_new_session": True}
    monkeypatch.delattr(os, "killpg")
    assert processes.kind() == "trees"
    assert processes.popen_options() == {"creationflags": 0}  # no CREATE_NEW_PROCESS_GROUP outside Windows
    assert guardian._mode() == "trees"
    monkeypatch.setattr(os, "name", "nt")
    assert processes.kind() == "jobs"
    assert guardian._mode() == "trees"  # for the runs a Job Object was refused to


def test_a_run_without_a_job_object_is_held_as_its_process_tree(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(_handle: int) -> None:
        raise OSError("AssignProcessToJobObject: access denied")

    popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        monkeypatch.delattr(os, "killpg")
        monkeypatch.setattr(os, "name", "nt")
        monkeypatch.setattr(processes, "_Job", refused)
        monkeypatch.setattr(popen, "_handle", 1234, raising=False)
        run = processes.adopt(popen)
        monkeypatch.undo()
        assert type(run) is processes.TreeRun and run.guarded
        assert "no Job Object" in caplog.text
        assert run.rss_bytes() > 0
        run.kill()
        assert popen.wait(10) < 0
    finally:
        popen.kill()
        popen.wait()


@pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="the sizes of 64-bit Windows")
def test_the_job_object_structures_have_windows_sizes() -> None:
    assert ctypes.sizeof(processes.BasicLimits) == 64  # JOBOBJECT_BASIC_LIMIT_INFORMATION
    assert ctypes.sizeof(processes.IoCounters) == 48
    assert ctypes.sizeof(processes.ExtendedLimits) == 144  # JOBOBJECT_EXTENDED_LIMIT_INFORMATION


def test_shell_true_is_cmd_slash_c_on_windows_as_in_dkron() -> None:
    assert shell_argv("echo %DATE% && dir", "nt") == ["cmd", "/C", "echo %DATE% && dir"]
    assert shell_argv("echo $HOME", "posix") == ["/bin/sh", "-c", "echo $HOME"]
    assert parse_shell_config({"command": "echo hi", "shell": "true"}).argv == ["/bin/sh", "-c", "echo hi"]
