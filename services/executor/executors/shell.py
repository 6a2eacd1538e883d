"""The shell executor: a command in its own process group (or Job Object, or process tree: processes.py), with
timeout, memory limit, stdin and user."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

from cronbus.common.errors import ValidationError
from cronbus.common.executor_config import ShellConfig, parse_shell_config
from cronbus.services.executor import processes
from cronbus.services.executor.executors.base import (
    Executor,
    RunRequest,
    RunResult,
    RunStatus,
    effective_timeout_s,
    fail,
    format_seconds,
    notice,
    register,
    rfc3339,
)
from cronbus.services.executor.guardian import Guardian

if TYPE_CHECKING:
    from cronbus.services.executor.output import OutputBuffer

logger = logging.getLogger(__name__)
GUARDIAN = Guardian()  # kills this process's runs if it dies (see guardian.py); stopped by the executor service

READ_BYTES = 256 * 1024  # at most per read of the output pipe


@dataclass(frozen=True)
class _Identity:
    """Who the command runs as when `su` is set."""

    user: str
    uid: int
    gid: int
    groups: list[int]
    home: str


def _environment(request: RunRequest, job_env: dict[str, str], identity: _Identity | None) -> dict[str, str]:
    """The command's environment: the executor's (filtered), who it runs as, the run's, then the job's."""
    env = dict(_inherited_environment())
    if identity is not None:
        env.update(HOME=identity.home, USER=identity.user, LOGNAME=identity.user)
    env.update(
        CRONBUS_JOB_NAME=request.job_name,
        CRONBUS_EXECUTION_ID=request.execution_id,
        CRONBUS_SCHEDULED_AT=rfc3339(request.scheduled_at),
        ENV_JOB_NAME=request.job_name,
    )
    env.update(job_env)  # last, so a job can override anything (as in Dkron)
    return env


async def _identity_of(user: str | None, group: str | None) -> _Identity | None:
    """Who the command runs as (None: as the executor); raises ValidationError when they do not exist."""
    if user is None:
        return None
    # The user database may be remote (NSS: LDAP, SSSD), so it is not read on the loop.
    return await asyncio.to_thread(_resolve_identity, user, group)


def _resolve_identity(user: str, group: str | None) -> _Identity:
    """Looks the user and group up on this host; raises ValidationError when they do not exist."""
    if not hasattr(os, "geteuid"):
        raise ValidationError(f"su {user}: not supported on this system (it has no POSIX users)")
    if os.geteuid() != 0:
        raise ValidationError(f"su {user}: the executor is not running as root")
    import grp  # noqa: PLC0415 - POSIX only: imported here, so the module imports on every system
    import pwd  # noqa: PLC0415

    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValidationError(f"su: unknown user {user!r}") from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValidationError(f"su: unknown group {group!r}") from None
    # Without an explicit list the child would keep root's supplementary groups.
    groups = os.getgrouplist(entry.pw_name, gid)
    return _Identity(entry.pw_name, entry.pw_uid, gid, groups, entry.pw_dir)


@register
class ShellExecutor(Executor):
    """Runs `command` in a new session (so its own process group; on Windows a Job Object, see processes.py),
    stdout and stderr merged.

    The run ends when the main process exits. Output still in flight is read for up to `drain_s` more (a
    background child may keep the pipe open forever); then every process left in the group is killed.
    Stopping (timeout, kill) sends SIGTERM to the group, then SIGKILL once the main process has exited or
    `kill_grace_s` has passed. Going over `mem_limit` (the RSS of the whole group, checked every
    `mem_poll_s`) kills the group at once: a grace period would let it grow further.
    """

    name = "shell"

    def __init__(self, kill_grace_s: float = 10.0, drain_s: float = 0.5, mem_poll_s: float = 0.2) -> None:
        super().__init__(kill_grace_s)
        self._drain_s = drain_s
        self._mem_poll_s = mem_poll_s

    @staticmethod
    def validate_config(config: dict[str, str]) -> None:
        parse_shell_config(config)

    async def run(self, request: RunRequest, output: OutputBuffer, kill: asyncio.Event) -> RunResult:
        try:
            config = parse_shell_config(request.config)
            identity = await _identity_of(config.su_user, config.su_group)
        except ValidationError as exc:
            return fail(output, str(exc))
        env = _environment(request, config.env, identity)

        # Our own pipe, not PIPE: Process.wait() would also wait for the pipe to close, which a
        # background child holding it can delay forever.
        read_fd, write_fd = os.pipe()
        try:
            pipe = _OutputPipe(read_fd, output) if processes.kind() == "groups" else _PipeThread(read_fd, output)
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        try:
            process = await _spawn(
                config.argv,
                write_fd,
                stdin=subprocess.PIPE if config.payload is not None else subprocess.DEVNULL,
                stdout=write_fd,
                stderr=subprocess.STDOUT,
                cwd=config.cwd,
                env=env,
                **processes.popen_options(),
                user=identity.uid if identity else None,
                group=identity.gid if identity else None,
                extra_groups=identity.groups if identity else None,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            pipe.close()
            why = _not_executable(config.argv[0], config.cwd, env.get("PATH")) or str(exc)
            return fail(output, f"cannot start {config.argv[0]!r}: {why}")
        except BaseException:
            pipe.close()
            raise
        logger.debug("started job=%s exec=%s pid=%d", request.job_name, request.execution_id, process.pid)
        try:
            if process.popen.stdin is not None and config.payload is not None:
                await _feed(process.popen.stdin, config.payload)
            status, reason = await self._supervise(process, config, request, kill)
            exit_code = await process.wait()
            await asyncio.wait({pipe.closed}, timeout=self._drain_s)
        finally:
            # Whatever happened (even cancellation), nothing the run started and can be reached goes on.
            process.end()
            pipe.close()
            if process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), timeout=self.kill_grace_s)
        logger.debug(
            "ended job=%s exec=%s exit_code=%d status=%s",
            request.job_name,
            request.execution_id,
            exit_code,
            status or "exited",
        )
        if status is not None:
            notice(output, reason)
            return RunResult(status, exit_code, reason)
        if exit_code == 0:
            return RunResult("success", 0)
        if exit_code < 0:
            return RunResult("failed", exit_code, f"killed by signal {_signal_name(-exit_code)}")
        return RunResult("failed", exit_code, f"exit code {exit_code}")

    async def _supervise(
        self,
        process: _Child,
        config: ShellConfig,
        request: RunRequest,
        kill: asyncio.Event,
    ) -> tuple[RunStatus | None, str]:
        """Waits for the main process to exit (None, "") or stops it and says why (status, reason)."""
        timeout_s = effective_timeout_s(config.timeout_s, request.timeout_s)
        exited = asyncio.create_task(process.wait())
        killed = asyncio.create_task(kill.wait())
        watchers: set[asyncio.Task[object]] = {exited, killed}
        over_memory = None
        if config.mem_limit_bytes is not None:
            over_memory = asyncio.create_task(_watch_memory(process.run, config.mem_limit_bytes, self._mem_poll_s))
            watchers.add(over_memory)
        try:
            done, _ = await asyncio.wait(watchers, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if exited in done:
                return None, ""
            if over_memory is not None and over_memory in done:
                process.run.kill()
                rss_mib = over_memory.result() // 1024**2
                return "failed", f"mem_limit {config.mem_limit} exceeded (RSS {rss_mib}M)"
            process.run.stop()
            await asyncio.wait({exited}, timeout=self.kill_grace_s)
            process.run.kill()
            if killed in done:
                return "killed", "killed"
            assert timeout_s is not None  # nothing else ends asyncio.wait early
            return "timeout", f"timed out after {format_seconds(timeout_s)}"
        finally:
            for task in watchers:
                task.cancel()


class _OutputPipe:
    """Copies what arrives on the read end of the output pipe into the buffer, read on the loop's selector (a
    transport and protocol per run cost measurably at a thousand runs a second); `closed` is done at end of file
    or close()."""

    def __init__(self, read_fd: int, output: OutputBuffer) -> None:
        self._fd = read_fd
        self._output = output
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        os.set_blocking(read_fd, False)
        self._loop.add_reader(read_fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self._fd, READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            logger.warning("output pipe read failed: %s", exc)
            data = b""
        if data:
            self._output.write(data)
        else:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        if not self.closed.done():
            self.closed.set_result(None)


class _PipeThread:
    """The same as _OutputPipe where the loop cannot watch a pipe (Windows): a thread reads it and hands what it
    read to the loop. The thread owns the read end and closes it at end of file; close() only stops the copying
    (closing a descriptor a thread is reading from could close another file that took its number). On Windows
    the run's Job Object is killed at its end, so end of file comes."""

    def __init__(self, read_fd: int, output: OutputBuffer) -> None:
        self._output: OutputBuffer | None = output
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        threading.Thread(target=self._pump, args=(read_fd,), daemon=True, name="output-pipe").start()

    def _pump(self, fd: int) -> None:
        try:
            while data := self._read(fd):
                self._hand_over(self._write, data)
        finally:
            os.close(fd)
            self._hand_over(self.close)

    @staticmethod
    def _read(fd: int) -> bytes:
        try:
            return os.read(fd, READ_BYTES)
        except OSError as exc:
            logger.warning("output pipe read failed: %s", exc)
            return b""

    def _hand_over(self, callback: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads the output any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _write(self, data: bytes) -> None:
        if self._output is not None:
            self._output.write(data)

    def close(self) -> None:
        self._output = None
        if not self.closed.done():
            self.closed.set_result(None)


@functools.cache
def _inherited_environment() -> dict[str, str]:
    """The executor's own environment, which every command starts from: read once, as it does not change while the
    executor runs (decoding os.environ anew for every run cost a few per cent of the executor's CPU)."""
    return dict(os.environ)


class _Child:
    """A process started by _spawn, with the run that holds its processes (processes.py), reaped on the event loop:
    its pidfd becomes readable when it exits (Linux >= 5.3), or else a thread of its own waits for it. The guardian
    watches the run until end() (where the system does not end the run with the executor by itself)."""

    def __init__(self, popen: Started) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.run = processes.adopt(popen)
        if self.run.guarded:
            GUARDIAN.watch(self.pid)
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        try:
            fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # an older kernel, or not Linux
            threading.Thread(target=self._wait_in_thread, args=(loop,), daemon=True).start()
        else:
            loop.add_reader(fd, self._on_pidfd, loop, fd)

    def end(self) -> None:
        """Kills whatever is left of the run and lets the guardian forget it."""
        self.run.kill()
        if self.run.guarded:
            GUARDIAN.release(self.pid)
        self.run.close()

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def _on_pidfd(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        loop.remove_reader(fd)
        os.close(fd)
        self._exited.set_result(self.popen.wait())  # it has exited: waitpid returns at once

    def _wait_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        code = self.popen.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._exited.set_result, code)


async def _spawn(argv: list[str], handed_fd: int, **options: Any) -> _Child:
    """Starts the command: through os.posix_spawn, on the loop, where that can do all the run needs (no working
    directory, no other user, process groups); else subprocess.Popen in a thread.

    posix_spawn (glibc: vfork, then exec) holds the loop only until the child has called exec, about a tenth of a
    millisecond, and costs half the CPU of Popen's Python side; handing it to a thread cost more than that under
    load, as the thread and the loop then wait for each other's GIL (probe: /bin/true runs through the shell
    executor alone, 64 at a time: 1 260/s in threads). Popen forks, which blocks the calling thread for as long
    as copying the executor's page tables takes (a few hundred microseconds, more on a busy host): on the loop
    it would hold up every other run. A run cancelled while Popen runs does not leave its process behind: its
    processes are killed once it exists.

    `handed_fd` (the write end of the output pipe) is closed once the command started: the child then has its
    copy, and ours would keep the pipe from reaching end of file. Closing it any earlier, say when the run is
    cancelled, would hand Popen a closed descriptor, or another file's that took its number."""
    if _spawnable(options):
        try:
            return _Child(_Spawned.start(argv, options))
        finally:
            os.close(handed_fd)
    spawning = asyncio.ensure_future(asyncio.to_thread(_start, argv, options, handed_fd))
    try:
        return _Child(await asyncio.shield(spawning))
    except asyncio.CancelledError:
        spawning.add_done_callback(_kill_orphan)
        raise


def _start(argv: list[str], options: dict[str, Any], handed_fd: int) -> subprocess.Popen[bytes]:
    try:
        return _popen(argv, options)
    finally:
        os.close(handed_fd)


def _popen(argv: list[str], options: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, **options)


def _spawnable(options: dict[str, Any]) -> bool:
    return (
        hasattr(os, "posix_spawn")
        and options.get("start_new_session") is True
        and options.get("cwd") is None
        and options.get("user") is None
        and options.get("group") is None
        and options.get("extra_groups") is None
        and options.get("stderr") == subprocess.STDOUT
        and options.get("stdin") in (subprocess.PIPE, subprocess.DEVNULL)
    )


class Started(Protocol):
    """What the run needs of the command it started (a subprocess.Popen, or a _Spawned)."""

    pid: int
    stdin: IO[bytes] | None

    def wait(self) -> int: ...


class _Spawned:
    """A command started by os.posix_spawn (glibc: vfork and exec, its failure raised here as OSError), in a session
    of its own, stdout and stderr to the run's pipe, stdin from /dev/null or a pipe of ours. The program is looked
    up in the PATH of the command's environment, as Popen does."""

    def __init__(self, pid: int, stdin: IO[bytes] | None) -> None:
        self.pid = pid
        self.stdin = stdin
        self._code: int | None = None

    @classmethod
    def start(cls, argv: list[str], options: dict[str, Any]) -> _Spawned:
        _seal_inherited()
        env: dict[str, str] = options["env"]
        program = _program(argv[0], env)
        out = options["stdout"]
        stdin_read, stdin_write = os.pipe() if options["stdin"] == subprocess.PIPE else (-1, -1)
        actions = [
            (os.POSIX_SPAWN_DUP2, stdin_read if stdin_read >= 0 else _devnull(), 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, out, 2),
        ]
        try:
            pid = os.posix_spawn(program, argv, env, file_actions=actions, setsid=True)
        except BaseException:
            if stdin_write >= 0:
                os.close(stdin_write)
            raise
        finally:
            if stdin_read >= 0:
                os.close(stdin_read)
        return cls(pid, os.fdopen(stdin_write, "wb") if stdin_write >= 0 else None)

    def wait(self) -> int:
        if self._code is None:
            _, status = os.waitpid(self.pid, 0)
            self._code = os.waitstatus_to_exitcode(status)
        return self._code


def _program(name: str, env: dict[str, str]) -> str:
    """The file `name` names: itself if it has a slash, else the first executable file of that name in the PATH
    of `env` (FileNotFoundError when there is none)."""
    if os.sep in name:
        return name
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(errno.ENOENT, "not found in PATH", name)


@functools.cache
def _seal_inherited() -> None:
    """Marks close-on-exec every descriptor above 2 that the executor inherited open without it (a shell or a
    supervisor may leave some): posix_spawn, unlike Popen, does not close the others in the child, and a command
    must get nothing of the executor's. Those the executor opens itself are close-on-exec already (PEP 446)."""
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    for name in os.listdir(folder):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # (the listing's own descriptor, closed by now)
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


@functools.cache
def _devnull() -> int:
    """One descriptor of /dev/null for every run's stdin (not inherited: posix_spawn dup2s it onto 0)."""
    return os.open(os.devnull, os.O_RDONLY)


def _kill_orphan(spawning: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    if spawning.cancelled() or spawning.exception() is not None:
        return
    _Child(spawning.result()).end()  # reaped when it exits


async def _feed(stdin: IO[bytes], payload: bytes) -> None:
    """Writes the payload and closes stdin, buffered on the loop (or by a thread where the loop cannot write to a
    pipe: Windows): a command that never reads it cannot block us."""
    if processes.kind() != "groups":
        threading.Thread(target=_write_and_close, args=(stdin, payload), daemon=True).start()
        return
    transport, _ = await asyncio.get_running_loop().connect_write_pipe(asyncio.Protocol, stdin)
    transport.write(payload)
    transport.close()


def _write_and_close(stdin: IO[bytes], payload: bytes) -> None:
    with contextlib.suppress(OSError), stdin:  # (OSError: the command exited without reading it all)
        stdin.write(payload)


def _not_executable(program: str, cwd: str | None, path: str | None) -> str:
    """Why `program` cannot be started, in words ("" when that is not the reason)."""
    if os.sep in program:
        target = os.path.join(cwd or os.getcwd(), program)
        return "" if os.path.isfile(target) and os.access(target, os.X_OK) else "no such executable file"
    return "" if shutil.which(program, path=path) else "not found in PATH"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return str(number)


async def _watch_memory(run: processes.Run, limit_bytes: int, poll_s: float) -> int:
    """Returns the run's resident memory as soon as it is above `limit_bytes`."""
    while True:
        rss = await asyncio.to_thread(run.rss_bytes)
        if rss > limit_bytes:
            return rss
        await asyncio.sleep(poll_s)
