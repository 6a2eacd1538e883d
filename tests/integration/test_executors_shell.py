"""The shell (and noop) executors against real processes: exits, timeouts, kills, groups, memory, users."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from cronbus.common.errors import ValidationError
from cronbus.common.executor_config import parse_shell_config as parse_config
from cronbus.services.executor.executors import shell as shell_module
from cronbus.services.executor.executors.base import (
    EXECUTORS,
    RunRequest,
    RunResult,
    get_executor,
    validate_executor_config,
)
from cronbus.services.executor.executors.noop import NoopExecutor
from cronbus.services.executor.executors.shell import ShellExecutor
from cronbus.services.executor.output import OutputBuffer
from tests.helpers import async_wait_until, wait_until

SCHEDULED_AT = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
# This file also runs on the simulated Windows (test_portability.py): no process groups, no POSIX users there.
SIMULATED_WINDOWS = not hasattr(os, "killpg")
IS_ROOT = not SIMULATED_WINDOWS and os.geteuid() == 0
KILLED = -getattr(signal, "SIGKILL", 9)  # the exit code of a process ended by SIGKILL (psutil's kill here)
posix_only = pytest.mark.skipif(SIMULATED_WINDOWS, reason="POSIX process groups and users")


def request(config: dict[str, str], timeout_s: float | None = None, executor: str = "shell") -> RunRequest:
    return RunRequest(
        execution_id="backup-1774747800-1",
        job_name="backup",
        scheduled_at=SCHEDULED_AT,
        attempt=1,
        executor=executor,
        config=config,
        timeout_s=timeout_s,
    )


def sh(command: str, **config: str) -> dict[str, str]:
    return {"command": command, "shell": "true", **config}


async def run(
    config: dict[str, str],
    timeout_s: float | None = None,
    executor: ShellExecutor | None = None,
    output: OutputBuffer | None = None,
    kill: asyncio.Event | None = None,
) -> tuple[RunResult, OutputBuffer]:
    output = output or OutputBuffer()
    result = await (executor or ShellExecutor(kill_grace_s=1.0)).run(
        request(config, timeout_s), output, kill or asyncio.Event()
    )
    return result, output


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 here may never reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def gone(pid: int) -> bool:
    return not alive(pid)


async def lines(output: OutputBuffer, count: int) -> bool:
    return output.data().count(b"\n") >= count


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# ---- results and output -------------------------------------------------------------------------------


async def test_success_merges_stdout_and_stderr() -> None:
    result, output = await run(sh("echo out; echo err >&2; echo again"))
    assert result == RunResult("success", 0)
    assert output.text() == "out\nerr\nagain\n"


async def test_without_shell_the_command_is_split_and_executed_directly() -> None:
    result, output = await run({"command": "printf '%s|' 'a b' \"$HOME\""})
    assert result.status == "success"
    assert output.text() == "a b|$HOME|"


@pytest.mark.parametrize("code", [1, 3, 255])
async def test_nonzero_exit_is_a_failure(code: int) -> None:
    result, output = await run(sh(f"echo before; exit {code}"))
    assert result == RunResult("failed", code, f"exit code {code}")
    assert output.text() == "before\n"


async def test_a_command_that_cannot_start_fails_with_the_reason_in_the_output() -> None:
    result, output = await run({"command": "/nonexistent/tool --flag"})
    assert result.status == "failed"
    assert result.exit_code is None
    assert result.reason.startswith("cannot start '/nonexistent/tool': ")
    assert result.reason in output.text()


@posix_only
async def test_a_plain_run_starts_through_posix_spawn_and_one_with_a_cwd_through_popen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    popen, spawn = subprocess.Popen, os.posix_spawn

    def counted_popen(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        if "cronbus.services.executor.guardian" not in argv:  # (the run guardian, started at the first run)
            started.append("popen")
        return popen(argv, **options)

    def counted_spawn(*args: Any, **options: Any) -> int:
        started.append("posix_spawn")
        return spawn(*args, **options)

    monkeypatch.setattr(subprocess, "Popen", counted_popen)
    monkeypatch.setattr(os, "posix_spawn", counted_spawn)
    tool = tmp_path / "bin" / "hello"
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\necho "hello $1 from $(pwd)"\nread line; echo "read $line"\n')
    tool.chmod(0o755)
    path = f"PATH={tool.parent}:/usr/bin:/bin"  # looked up in the job's PATH, as Popen does
    payload = base64.b64encode(b"a line\n").decode()
    result, output = await run({"command": "hello you", "env": path, "payload": payload})
    assert (result, output.text(), started) == (RunResult("success", 0), f"hello you from {os.getcwd()}\nread a line\n",
                                                ["posix_spawn"])  # fmt: skip
    result, output = await run({"command": "hello there", "env": path, "cwd": str(tmp_path)})
    assert (result, output.text(), started[1:]) == (RunResult("success", 0), f"hello there from {tmp_path}\nread \n",
                                                    ["popen"])  # fmt: skip
    result, output = await run({"command": "ls /proc/self/fd"})  # nothing of the executor's but the pipe (and ls's own)
    assert output.text().split() == ["0", "1", "2", "3"], output.text()
    result, _ = await run({"command": "no-such-tool", "env": path})
    assert result.reason == "cannot start 'no-such-tool': not found in PATH"
    tool.chmod(0o644)
    result, _ = await run({"command": str(tool)})
    assert result.reason == f"cannot start '{tool}': no such executable file"


async def test_an_invalid_config_fails_the_run_without_raising() -> None:
    result, output = await run({"shell": "true"})
    assert result == RunResult("failed", None, "command: required")
    assert output.text() == "[cronbus] command: required\n"


async def test_environment() -> None:
    result, output = await run(
        sh(
            'echo "$CRONBUS_JOB_NAME|$ENV_JOB_NAME|$CRONBUS_EXECUTION_ID|$CRONBUS_SCHEDULED_AT|$FOO|$BAR|$PATH"',
            env="FOO=1,BAR=x=y",
        )
    )
    assert result.status == "success"
    assert output.text() == f"backup|backup|backup-1774747800-1|2026-03-29T01:30:00Z|1|x=y|{os.environ['PATH']}\n"


async def test_working_directory(tmp_path: Path) -> None:
    result, output = await run(sh("pwd", cwd=str(tmp_path)))
    assert result.status == "success"
    assert output.text() == f"{tmp_path}\n"


async def test_a_missing_working_directory_fails(tmp_path: Path) -> None:
    result, output = await run(sh("pwd", cwd=str(tmp_path / "missing")))
    assert result.status == "failed"
    assert "missing" in result.reason
    assert result.reason in output.text()


async def test_payload_goes_to_stdin() -> None:
    payload = b"line one\n\x00\xff binary\n" * 10_000  # more than a pipe holds
    result, output = await run({"command": "cat", "payload": base64.b64encode(payload).decode()})
    assert result.status == "success"
    assert output.total_bytes == len(payload)
    assert output.data() == payload[-256_000:]


async def test_without_payload_stdin_is_empty() -> None:
    result, output = await run({"command": "cat"})
    assert result == RunResult("success", 0)
    assert output.total_bytes == 0


async def test_a_payload_the_command_never_reads_does_not_block() -> None:
    payload = base64.b64encode(b"x" * 1_000_000).decode()
    result, _ = await run(sh("exit 0", payload=payload))
    assert result.status == "success"


async def test_non_utf8_output_is_kept_as_bytes_and_decoded_with_replacements() -> None:
    result, output = await run(sh(r"printf 'caf\351 \377\n'"))
    assert result.status == "success"
    assert output.data() == b"caf\xe9 \xff\n"
    assert output.text() == "caf\ufffd \ufffd\n"


async def test_huge_output_keeps_the_last_bytes_in_constant_memory() -> None:
    peak = before = rss_bytes()
    chunk_sizes: list[int] = []

    def on_chunk(chunk: bytes) -> None:
        nonlocal peak
        peak = max(peak, rss_bytes())
        chunk_sizes.append(len(chunk))

    output = OutputBuffer(on_chunk=on_chunk, flush_interval_s=0.05)
    result, _ = await run(sh(r"head -c 100000000 /dev/zero | tr '\0' a"), output=output)
    output.close()
    assert result.status == "success"
    assert output.total_bytes == 100_000_000
    assert output.truncated
    assert output.data() == b"a" * 256_000
    assert max(chunk_sizes) <= 256_000 + 100  # the marker line included
    assert peak - before < 64 * 1024 * 1024, f"RSS grew by {(peak - before) // 1024**2} MiB"


# ---- stopping: timeout, kill, memory, cancellation -----------------------------------------------------


async def test_timeout_kills_the_whole_process_group() -> None:
    result, output = await run(sh("sleep 60 & echo $!; wait", timeout="500ms"))
    child = int(output.text().splitlines()[0])
    assert result.status == "timeout"
    assert result.reason == "timed out after 0.5s"
    assert "[cronbus] timed out after 0.5s\n" in output.text()
    await async_wait_until(lambda: gone(child), timeout_s=5, what="the child in the group to be killed")


async def test_the_job_timeout_applies_when_smaller_than_the_config_timeout() -> None:
    result, _ = await run(sh("sleep 60", timeout="30s"), timeout_s=0.3)
    assert result.reason == "timed out after 0.3s"


async def test_sigterm_comes_first() -> None:
    started = time.monotonic()
    result, _ = await run(sh("sleep 60"), timeout_s=0.3, executor=ShellExecutor(kill_grace_s=30))
    assert result.status == "timeout"
    assert result.exit_code == -signal.SIGTERM
    assert time.monotonic() - started < 10  # ended by SIGTERM, long before the grace period


async def test_a_command_ignoring_sigterm_is_killed_after_the_grace_period() -> None:
    started = time.monotonic()
    result, _ = await run(sh("trap '' TERM; sleep 60"), timeout_s=0.3, executor=ShellExecutor(kill_grace_s=1.0))
    elapsed = time.monotonic() - started
    assert result.status == "timeout"
    assert result.exit_code == KILLED
    assert 1.3 <= elapsed < 10


async def test_kill_event_stops_the_run() -> None:
    output, kill = OutputBuffer(), asyncio.Event()
    running = asyncio.create_task(run(sh("echo started; sleep 60 & echo $!; wait"), output=output, kill=kill))
    await async_wait_until(lambda: lines(output, 2), timeout_s=5, what="started and the child's pid")
    kill.set()
    result, _ = await asyncio.wait_for(running, timeout=10)
    assert result.status == "killed"
    assert result.reason == "killed"
    assert output.text().endswith("[cronbus] killed\n")
    child = int(output.text().splitlines()[1])
    await async_wait_until(lambda: gone(child), timeout_s=5)


async def test_cancelling_the_run_kills_the_group() -> None:
    output = OutputBuffer()
    running = asyncio.create_task(run(sh("sleep 60 & echo $!; wait"), output=output))
    await async_wait_until(lambda: lines(output, 1), timeout_s=5)
    child = int(output.text().splitlines()[0])
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, timeout=10)
    await async_wait_until(lambda: gone(child), timeout_s=5)


async def test_cancelling_the_run_while_its_command_starts_kills_the_command_once_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Popen's thread; a command started by posix_spawn is started on the loop, where nothing can come between."""
    starting, release = threading.Event(), threading.Event()
    spawned: list[shell_module.Started] = []
    popen = shell_module._popen

    handed_a_pipe: list[bool] = []

    def slow_popen(argv: list[str], options: dict[str, Any]) -> shell_module.Started:
        starting.set()
        release.wait(10)
        try:  # the output pipe's write end, still open though the run was cancelled meanwhile
            handed_a_pipe.append(stat.S_ISFIFO(os.fstat(options["stdout"]).st_mode))
        except OSError:
            handed_a_pipe.append(False)
        spawned.append(popen(argv, options))
        return spawned[-1]

    async def in_popen() -> bool:
        return starting.is_set()

    async def started() -> bool:
        return bool(spawned)

    monkeypatch.setattr(shell_module, "_popen", slow_popen)
    running = asyncio.create_task(run(sh("sleep 60", cwd="/")))  # a cwd: started by Popen in a thread
    await async_wait_until(in_popen, timeout_s=5)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, timeout=10)
    release.set()
    await async_wait_until(started, timeout_s=5)
    assert handed_a_pipe == [True]
    await async_wait_until(lambda: gone(spawned[0].pid), timeout_s=5)


async def test_going_over_mem_limit_kills_the_group() -> None:
    code = "import time; data = b'a' * (200 << 20); print('allocated', flush=True); time.sleep(60)"
    started = time.monotonic()
    result, output = await run({"command": shlex.join([sys.executable, "-c", code]), "mem_limit": "50M"})
    assert result.status == "failed"
    assert result.reason.startswith("mem_limit 50M exceeded")
    assert result.exit_code == KILLED
    assert result.reason in output.text()
    assert time.monotonic() - started < 20


async def test_staying_under_mem_limit_is_fine() -> None:
    result, _ = await run(sh("echo small", mem_limit="1G"))
    assert result.status == "success"


# ---- background children -------------------------------------------------------------------------------


@pytest.mark.skipif(
    SIMULATED_WINDOWS, reason="on Windows the run's Job Object holds the child; the simulation has none"
)
async def test_a_background_child_holding_the_output_does_not_keep_the_run_going() -> None:
    started = time.monotonic()
    result, output = await run(sh("sleep 60 & echo $!"))
    assert result == RunResult("success", 0)
    assert time.monotonic() - started < 10
    child = int(output.text().splitlines()[0])
    await async_wait_until(lambda: gone(child), timeout_s=5, what="the child left in the group to be killed")


async def test_a_daemon_that_left_the_group_does_not_keep_the_run_going() -> None:
    started = time.monotonic()
    result, output = await run(sh("setsid sleep 60 & echo $!"))
    daemon = int(output.text().splitlines()[0])
    try:
        assert result == RunResult("success", 0)
        assert time.monotonic() - started < 10
    finally:
        psutil.Process(daemon).kill()


# ---- su ---------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not IS_ROOT, reason="su needs the executor to run as root")
@pytest.mark.parametrize("su", ["nobody", "65534", "nobody:nogroup"])
async def test_su_runs_as_the_user_without_root_groups(su: str) -> None:
    result, output = await run(sh('id -u; id -g; id -G; echo "$HOME $USER"', su=su))
    assert result.status == "success", output.text()
    assert output.text() == "65534\n65534\n65534\n/nonexistent nobody\n"


@pytest.mark.skipif(not IS_ROOT, reason="su needs the executor to run as root")
async def test_su_to_a_group() -> None:
    result, output = await run(sh("id -u; id -g", su="nobody:root"))
    assert result.status == "success"
    assert output.text() == "65534\n0\n"


@pytest.mark.skipif(not IS_ROOT, reason="su needs the executor to run as root")
@pytest.mark.parametrize(
    ("su", "reason"),
    [
        ("no-such-user", "su: unknown user 'no-such-user'"),
        ("nobody:no-such-group", "su: unknown group 'no-such-group'"),
    ],
)
async def test_su_to_an_unknown_user_or_group_fails(su: str, reason: str) -> None:
    result, output = await run(sh("id -u", su=su))
    assert result == RunResult("failed", None, reason)
    assert reason in output.text()


@posix_only
@pytest.mark.skipif(IS_ROOT, reason="checks the refusal when not running as root")
async def test_su_without_root_fails() -> None:
    result, _ = await run(sh("id -u", su="nobody"))
    assert result.status == "failed"
    assert "not running as root" in result.reason


@pytest.mark.skipif(not SIMULATED_WINDOWS, reason="a system without POSIX users (the simulated Windows)")
async def test_su_where_the_system_has_no_users_fails_saying_so() -> None:
    result, _ = await run(sh("id -u", su="nobody"))
    assert result == RunResult("failed", None, "su nobody: not supported on this system (it has no POSIX users)")


# ---- configuration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "command: required"),
        ({"command": "  "}, "command: required"),
        ({"command": "echo 'unbalanced"}, "command: cannot split"),
        ({"command": "true", "shell": "yes"}, "shell: 'yes' is not a boolean"),
        ({"command": "true", "timeout": "soon"}, "timeout: 'soon' is not a positive duration"),
        ({"command": "true", "timeout": "0"}, "timeout: '0' is not a positive duration"),
        ({"command": "true", "timeout": "5x"}, "timeout: '5x' is not a positive duration"),
        ({"command": "true", "mem_limit": "lots"}, "mem_limit: 'lots' is not a positive size"),
        ({"command": "true", "mem_limit": "0M"}, "mem_limit: '0M' is not a positive size"),
        ({"command": "true", "payload": "not base64!"}, "payload: not valid base64"),
        ({"command": "true", "env": "FOO"}, "env: 'FOO' is not KEY=value"),
        ({"command": "true", "env": "=1"}, "env: '=1' is not KEY=value"),
        ({"command": "true", "su": "a:b:c"}, "su: 'a:b:c' is not user or user:group"),
    ],
)
def test_invalid_config_is_rejected_with_a_clear_message(config: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match="^" + message):
        validate_executor_config("shell", config)


@pytest.mark.parametrize(
    ("timeout", "seconds"), [("30", 30.0), ("2.5", 2.5), ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0)]
)
def test_timeout_forms(timeout: str, seconds: float) -> None:
    assert parse_config({"command": "true", "timeout": timeout}).timeout_s == seconds


@pytest.mark.parametrize(
    ("mem_limit", "size"),
    [
        ("1048576", 1 << 20),
        ("512M", 512 << 20),
        ("1G", 1 << 30),
        ("1.5g", 3 << 29),
        ("64KiB", 64 << 10),
        ("2MB", 2 << 20),
    ],
)
def test_mem_limit_forms(mem_limit: str, size: int) -> None:
    assert parse_config({"command": "true", "mem_limit": mem_limit}).mem_limit_bytes == size


def test_registry() -> None:
    assert sorted(EXECUTORS) == ["grpc", "http", "nats", "noop", "rabbitmq", "shell"]
    assert isinstance(get_executor("shell"), ShellExecutor)
    with pytest.raises(
        ValidationError, match=r"^unknown executor 'x' \(known: grpc, http, nats, noop, rabbitmq, shell\)$"
    ):
        get_executor("x")
    with pytest.raises(ValidationError, match="unknown executor 'x'"):
        validate_executor_config("x", {})
    with pytest.raises(ValidationError, match=r"^executor 'kafka' is not available in cronbus: "):
        get_executor("kafka")


# ---- noop ------------------------------------------------------------------------------------------------


async def test_noop() -> None:
    output = OutputBuffer()
    result = await NoopExecutor().run(request({"output": "hi\n"}, executor="noop"), output, asyncio.Event())
    assert result == RunResult("success", None)
    assert output.text() == "hi\n"
    output = OutputBuffer()
    result = await NoopExecutor().run(request({"fail": "true"}, executor="noop"), output, asyncio.Event())
    assert result.status == "failed"
    assert result.reason in output.text()
    with pytest.raises(ValidationError, match="fail: 'maybe' is not a boolean"):
        validate_executor_config("noop", {"fail": "maybe"})


@posix_only
@pytest.mark.parametrize("system", ["linux", "windows"])
def test_the_guardian_kills_the_runs_of_an_executor_killed_with_sigkill(system: str) -> None:
    """What keeps a run declared "executor lost" from going on beside its retry (the chaos suite checks it end to
    end): an owner registers two runs, then dies by SIGKILL; the guardian kills the one still registered (its
    process group, or on simulated Windows its process tree), child included, and leaves the released one alone."""
    owner_code = (
        "import asyncio, subprocess\n"
        "from cronbus.services.executor import processes\n"
        "from cronbus.services.executor.guardian import Guardian\n"
        "async def main():\n"
        "    guardian = Guardian()\n"
        "    command = ['sh', '-c', 'sleep 60 & echo $!; wait']\n"
        "    options = processes.popen_options()\n"
        "    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, **options) for _ in range(2)]\n"
        "    for run in runs:\n"
        "        guardian.watch(run.pid)\n"
        "    guardian.release(runs[1].pid)\n"
        "    children = [int(run.stdout.readline()) for run in runs]\n"
        "    await asyncio.sleep(0)\n"  # one turn of the loop: the registrations are in the guardian's pipe
        "    print(runs[0].pid, children[0], runs[1].pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    if system == "windows":
        owner_code = "from tests import simulated_platform\nsimulated_platform.install('windows')\n" + owner_code
    root = Path(__file__).resolve().parents[2]
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert owner.stdout is not None
    watched, child, released = (int(pid) for pid in owner.stdout.readline().split())
    try:
        owner.kill()
        owner.wait()
        wait_until(lambda: not alive(watched) and not alive(child), timeout_s=10, what="the watched run killed")
        assert alive(released)
    finally:
        owner.stdout.close()
        for pid in (watched, released):
            with contextlib.suppress(psutil.Error):
                for process in [*psutil.Process(pid).children(recursive=True), psutil.Process(pid)]:
                    process.kill()
