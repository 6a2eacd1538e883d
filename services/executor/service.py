"""The executor process: registers with its tags, follows the leader, runs what it is dispatched."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import assert_never

import msgspec

from cronbus.common.bus import Bus, tag_topic
from cronbus.common.consul import keys
from cronbus.common.consul.catalog import Registration
from cronbus.common.consul.client import ConsulClient
from cronbus.common.errors import ValidationError
from cronbus.common.lifecycle import reload_on_sighup, tune_gc
from cronbus.common.messages import (
    REVISION,
    CancelRun,
    ControlReply,
    Dispatch,
    DispatchAccepted,
    Dispatches,
    DispatchRefused,
    ExecutionEnded,
    ExecutionFinished,
    ExecutionStarted,
    Hello,
    KillRequested,
    OutputProduced,
    OutputPublished,
    Published,
    Welcome,
)
from cronbus.common.metrics import serve_metrics
from cronbus.common.models import ExecutionStatus, now_utc
from cronbus.common.settings import ExecutorSettings
from cronbus.common.statsd import statsd_sender
from cronbus.common.tracing import Attributes, tracing
from cronbus.services.executor.connection import LeaderConnection, Reliable
from cronbus.services.executor.dedupe import SeenIds
from cronbus.services.executor.executors.base import (
    EXECUTORS,
    Executor,
    RunRequest,
    RunResult,
    fail,
    get_executor,
)
from cronbus.services.executor.executors.shell import GUARDIAN
from cronbus.services.executor.journal import Journal
from cronbus.services.executor.metrics import ExecutorMetrics
from cronbus.services.executor.output import OutputBuffer
from cronbus.services.executor.processors import ProcessorContext, forwards_output, process_output
from cronbus.services.executor.runs import STARTED_AFTER_S, Run, SlotGate, StartReports, Unstarted

log = logging.getLogger(__name__)

RESULTS_KEPT = 64  # finished results kept in memory to answer a repeated dispatch with
DELIVERY_WAIT_S = 5.0  # at shutdown, how long results may wait for acks before the journal keeps them
CANCEL_MARGIN_S = 5.0  # after a kill, how much longer than kill_grace_s a run may take before it is cancelled
INTERRUPTED = "executor restarted during the run"


def builtin_tags(settings: ExecutorSettings) -> dict[str, str]:
    """The executor's tags: its own plus those every executor has, as a Dkron agent does (docs/migrating-from-dkron.md,
    "Targeting"): node, hostname, dc, region, version, and role `dkron` unless its own tags give a role."""
    return {
        "role": "dkron",
        **settings.tags,
        "node": settings.node_name,
        "hostname": socket.gethostname(),
        "dc": settings.datacenter,
        "region": settings.region,
        "version": cronbus_version(),
    }


def cronbus_version() -> str:
    try:
        return importlib.metadata.version("cronbus")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def default_data_dir(node: str) -> Path:
    return Path.home() / ".local" / "state" / "cronbus" / node


class ExecutorService:
    """Runs dispatched executions, at most `capacity` at once, each execution id at most once.

    Results are delivered reliably: every Started/Output/Finished is resent until the leader acks it, and a
    Finished is journaled before it is sent, so not even a restart loses it.
    """

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.node = settings.node_name
        host, port = settings.consul.host_port
        self.consul = ConsulClient(host, port, settings.consul.token)
        self.tags = builtin_tags(settings)
        self.registration = Registration(
            self.consul,
            service=keys.EXECUTOR_SERVICE,
            service_id=f"executor-{settings.node_name}",
            address="127.0.0.1",
            port=0,
            tags=self.tags,
        )
        data_dir = Path(settings.data_dir).expanduser() if settings.data_dir else default_data_dir(self.node)
        self.seen = SeenIds(data_dir / "seen.jsonl")
        self.journal = Journal(data_dir / "results")
        self.bus = Bus.from_settings(settings.bus, "executor")
        self.connection = LeaderConnection(
            node=self.node,
            topics=[tag_topic(k, v) for k, v in sorted(self.tags.items())],
            consul=self.consul,
            bus=self.bus,
            settings=settings.bus,
            handler=self,
        )
        self.runs: dict[str, Run] = {}
        self._gate = SlotGate()
        self._reports = StartReports(self._report_started)
        self._accepted: list[str] = []  # ids accepted in this turn of the loop, not acknowledged yet
        self._executors: dict[str, Executor] = {}  # by name: they keep nothing between runs, so one serves all
        self.results: OrderedDict[str, ExecutionFinished] = OrderedDict()
        self.accepting = True
        self._acked = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self.tracing = tracing("executor", settings.otel_endpoint)
        self.metrics = ExecutorMetrics(
            running=lambda: float(len(self.runs)),
            capacity=settings.capacity,
            undelivered=lambda: float(self._undelivered()),
        )

    async def run(self, shutdown: asyncio.Event) -> None:
        drained = asyncio.Event()  # set once running executions are drained and results delivered
        tune_gc()
        try:
            await self._restore()
            await self.registration.register_with_retry(shutdown)
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                tg.create_task(self.registration.keep_alive(drained))
                tg.create_task(self.connection.run(drained))
                tg.create_task(reload_on_sighup(self._reload_keys, drained))  # without keys: a no-op
                if (sender := statsd_sender(self.metrics.registry, self.settings.statsd)) is not None:
                    tg.create_task(sender.run(drained))  # until drained, as the endpoint below, and a last send then
                if self.settings.metrics_port:  # served until drained, so a drain can be watched
                    tg.create_task(
                        serve_metrics(
                            self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port, drained
                        )
                    )
                await shutdown.wait()
                await self._drain()
                drained.set()
        finally:
            GUARDIAN.close()
            await asyncio.to_thread(self.tracing.close)  # the last spans, bounded by the exporter's timeout
            self.seen.close()
            self.journal.close()
            await self.registration.deregister()
            await self.consul.close()
            self.bus.close()

    async def _reload_keys(self) -> None:
        """SIGHUP: the allow-lists again; a session with a leader whose key left them ends."""
        await asyncio.to_thread(self.bus.reload_keys)
        self.connection.keys_reloaded()

    # ---- start and stop -----------------------------------------------------------------------------

    async def _restore(self) -> None:
        """Loads the seen ids and the undelivered results; a run a crash interrupted becomes a failed result."""
        await asyncio.to_thread(self.seen.load)
        journaled = await asyncio.to_thread(self.journal.load)
        for result in journaled:
            self.connection.outbox.add(result)
            self._remember(result)
        if journaled:
            log.info("results to deliver from the journal count=%d", len(journaled))
        for execution_id, job_name in self.seen.unfinished():
            if execution_id in self.results:  # journaled, but the crash came before it was marked finished
                await self.seen.finish(execution_id)
                continue
            log.warning("run interrupted by a restart job=%s exec=%s", job_name, execution_id)
            await self._end_early(execution_id, job_name, "failed", INTERRUPTED)

    async def _drain(self) -> None:
        """Refuses new work, lets runs finish (killing them after drain_timeout_s), waits briefly for acks."""
        self.accepting = False
        log.info("draining runs=%d timeout=%.1fs", len(self.runs), self.settings.drain_timeout_s)
        if not await self._runs_ended(self.settings.drain_timeout_s):
            log.warning("drain timeout: killing runs=%d", len(self.runs))
            for run in self.runs.values():
                self._gate.end_unstarted(run, Unstarted("killed", "executor stopped before the run's slot"))
                run.kill.set()
            if not await self._runs_ended(self.settings.kill_grace_s + CANCEL_MARGIN_S):
                log.error("runs did not stop after a kill; cancelling count=%d", len(self.runs))
                tasks = [run.task for run in self.runs.values() if run.task is not None]
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELIVERY_WAIT_S
        while self._undelivered() and self.connection.connected and loop.time() < deadline:
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), deadline - loop.time())
        if self._undelivered():
            log.warning("results left to the journal count=%d", self._undelivered())

    async def _runs_ended(self, timeout_s: float) -> bool:
        tasks = [run.task for run in self.runs.values() if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        return not self.runs

    def _undelivered(self) -> int:
        return sum(isinstance(m, ExecutionFinished) for m in self.connection.outbox.pending())

    # ---- connection handler -------------------------------------------------------------------------

    def hello(self) -> Hello:
        return Hello(
            node=self.node,
            tags=self.tags,
            capacity=self.settings.capacity,
            running=list(self.runs),
            max_term=self.seen.max_term,
            revision=REVISION,
        )

    def running_count(self) -> int:
        return len(self.runs)

    async def on_acked(self, message: Reliable) -> None:
        if isinstance(message, ExecutionFinished):
            self.journal.remove(message.seq)
            self._acked.set()

    async def on_peer(self, message: Welcome | KillRequested | CancelRun | ControlReply) -> None:
        match message:
            case Welcome(term=term):
                await self.seen.see_term(term)
            case KillRequested(execution_id=execution_id, term=term):
                self._on_kill(execution_id, term)
            case CancelRun(execution_id=execution_id, term=term, reason=reason):
                run = self.runs.get(execution_id)
                if term < self.seen.max_term:
                    log.warning("ignored cancel exec=%s: stale term %d < %d", execution_id, term, self.seen.max_term)
                elif run is None or not self._gate.end_unstarted(run, Unstarted("skipped", reason)):
                    log.info("cancel of a run not waiting for its slot here exec=%s", execution_id)
            case ControlReply():
                log.debug("ignored control reply (executors send no control requests)")
            case _:
                assert_never(message)

    def _on_kill(self, execution_id: str, term: int) -> None:
        run = self.runs.get(execution_id)
        if term < self.seen.max_term:
            log.warning("ignored kill exec=%s: stale term %d < %d", execution_id, term, self.seen.max_term)
        elif run is None:
            log.info("kill of an execution not running here exec=%s", execution_id)
        elif not self._gate.end_unstarted(run, Unstarted("killed", "killed before its slot")):
            log.info("killing job=%s exec=%s", run.request.job_name, execution_id)
            run.kill.set()

    async def on_published(self, message: Published) -> None:
        match message:
            case Dispatch():
                await self._on_dispatch(message)
            case Dispatches(runs=runs):
                for dispatch in runs:
                    await self._on_dispatch(dispatch)
            case OutputPublished() | ExecutionEnded():
                pass  # for gateways
            case _:
                assert_never(message)

    # ---- dispatches and runs ------------------------------------------------------------------------

    async def _on_dispatch(self, dispatch: Dispatch) -> None:
        execution_id, job_name = dispatch.execution_id, dispatch.job_name
        if self.node not in dispatch.targets:
            log.debug("dispatch for others job=%s exec=%s targets=%s", job_name, execution_id, dispatch.targets)
            return
        if dispatch.term < self.seen.max_term:
            self._refuse(dispatch, f"stale term {dispatch.term} < {self.seen.max_term}")
            return
        await self.seen.see_term(dispatch.term)
        if execution_id in self.seen or execution_id in self.runs:
            log.info("repeated dispatch job=%s exec=%s", job_name, execution_id)
            self.connection.send(
                DispatchAccepted(
                    execution_id=execution_id, execution_ids=[execution_id], node=self.node, duplicate=True
                )
            )
            await self._resend_result(execution_id)
            return
        if not self.accepting:
            self._refuse(dispatch, "shutting down")
            return
        if len(self.runs) >= self.settings.capacity:
            self._refuse(dispatch, "at capacity")
            return
        request = RunRequest(
            execution_id=execution_id,
            job_name=job_name,
            scheduled_at=dispatch.scheduled_at,
            attempt=dispatch.attempt,
            executor=dispatch.executor,
            config=dispatch.config,
            timeout_s=dispatch.timeout_s,
        )
        run = Run(request, processors=dispatch.processors, trace=dispatch.trace)
        self.runs[execution_id] = run
        assert self._tasks is not None
        run.task = self._tasks.create_task(self._execute(run))

    def _refuse(self, dispatch: Dispatch, reason: str) -> None:
        log.info("refused job=%s exec=%s: %s", dispatch.job_name, dispatch.execution_id, reason)
        self.metrics.refused.inc(reason="stale_term" if reason.startswith("stale term") else reason.replace(" ", "_"))
        self.connection.send(DispatchRefused(execution_id=dispatch.execution_id, node=self.node, reason=reason))

    async def _resend_result(self, execution_id: str) -> None:
        """Answers a repeated dispatch of a finished run with its result again, while it is still known."""
        pending = self.connection.outbox.finished(execution_id)
        if pending is not None:  # not acked yet: the same message again
            self.connection.resend(pending)
            return
        result = self.results.get(execution_id)
        if result is not None:
            copy = msgspec.structs.replace(result, seq=self.connection.outbox.next_seq())
            await self.journal.save(copy)
            self._remember(copy)
            self.connection.send_reliable(copy)

    async def _execute(self, run: Run) -> None:
        request = run.request
        try:
            await self.seen.accept(request.execution_id, request.job_name)  # durable before the leader hears of it
            self._accept(request.execution_id)
            unstarted = await self._gate.hold(run)
            if unstarted is not None:
                await self._end_early(request.execution_id, request.job_name, *unstarted)
                return
            attributes: Attributes = {"cronbus.job": request.job_name, "cronbus.execution_id": request.execution_id,
                          "cronbus.node": self.node, "cronbus.attempt": request.attempt}  # fmt: skip
            with self.tracing.span("cronbus.run", parent=run.trace, attributes=attributes) as span:
                finished = await self._run_started(run)
                span.set("cronbus.status", finished.status)
                if finished.status != "success":
                    span.fail(finished.reason or finished.status)
            await self._finish(finished)
        finally:
            del self.runs[request.execution_id]

    async def _run_started(self, run: Run) -> ExecutionFinished:
        """Runs a run whose slot has come, and makes its result (output processed, not yet journaled)."""
        request = run.request
        started_at = run.started_at = now_utc()
        began = time.monotonic()
        self.metrics.started.inc(executor=request.executor if request.executor in EXECUTORS else "unknown")
        log.debug("started job=%s exec=%s executor=%s", request.job_name, request.execution_id, request.executor)
        # Output a processor keeps to itself (forward false) is not streamed live either. What comes before the
        # run is reported started waits for that (or, when the run ends first, goes with its result).
        stream = forwards_output(run.processors)
        on_chunk = (lambda chunk: self._stream(run, chunk)) if stream else None
        output = OutputBuffer(on_chunk=on_chunk, first_flush_s=STARTED_AFTER_S)
        self._reports.later(run)
        try:
            result = await self._run(request, output, run.kill)
            await asyncio.sleep(0)  # a run that ended at once (noop) lets the others of its slot start first
        finally:
            run.ended = True
            output.close()
        self.metrics.finished.inc(status=result.status)
        self.metrics.duration.observe(time.monotonic() - began, status=result.status)
        text, truncated = output.text(), output.truncated
        if run.processors:
            text = await self._process(run, result, text)
            truncated = truncated and stream
        return ExecutionFinished(
            seq=self.connection.outbox.next_seq(),
            execution_id=request.execution_id,
            job_name=request.job_name,
            node=self.node,
            status=result.status,
            exit_code=result.exit_code,
            reason=result.reason,
            output=text,
            output_truncated=truncated,
            started_at=started_at,
            finished_at=now_utc(),
        )

    def _accept(self, execution_id: str) -> None:
        """Acknowledges a dispatch; the ids accepted in one turn of the loop go in one message (revision 1)."""
        if self.connection.revision < 1:
            self.connection.send(
                DispatchAccepted(execution_id=execution_id, execution_ids=[execution_id], node=self.node)
            )
            return
        if not self._accepted:
            asyncio.get_running_loop().call_soon(self._send_accepted)
        self._accepted.append(execution_id)

    def _send_accepted(self) -> None:
        self.connection.send(DispatchAccepted(execution_ids=self._accepted, node=self.node))
        self._accepted = []

    async def _end_early(self, execution_id: str, job_name: str, status: ExecutionStatus, reason: str) -> None:
        """The result of a run that did not run (to its end): cancelled before its slot, or cut by a restart."""
        log.info("ended early job=%s exec=%s status=%s: %s", job_name, execution_id, status, reason)
        await self._finish(
            ExecutionFinished(
                seq=self.connection.outbox.next_seq(),
                execution_id=execution_id,
                job_name=job_name,
                node=self.node,
                status=status,
                reason=reason,
                output=f"[cronbus] {reason}\n",
                finished_at=now_utc(),
            )
        )

    def _report_started(self, run: Run) -> None:
        assert run.started_at is not None  # set by _execute before the run is reported
        self.connection.send_reliable(
            ExecutionStarted(
                seq=self.connection.outbox.next_seq(),
                execution_id=run.request.execution_id,
                job_name=run.request.job_name,
                node=self.node,
                started_at=run.started_at,
            )
        )

    async def _run(self, request: RunRequest, output: OutputBuffer, kill: asyncio.Event) -> RunResult:
        executor = self._executors.get(request.executor)
        if executor is None:
            try:
                executor = get_executor(request.executor, kill_grace_s=self.settings.kill_grace_s)
            except ValidationError as exc:
                return fail(output, str(exc))
            self._executors[request.executor] = executor
        try:
            return await executor.run(request, output, kill)
        except Exception as exc:  # task boundary of one run: a runner bug fails this run, not the executor
            log.exception("runner crashed job=%s exec=%s", request.job_name, request.execution_id)
            return fail(output, f"executor {request.executor!r} crashed: {exc!r}")

    async def _process(self, run: Run, result: RunResult, output: str) -> str:
        """Runs the job's output processors (files and sockets: in a thread); returns what the record keeps."""
        request = run.request
        ctx = ProcessorContext(
            job_name=request.job_name,
            execution_id=request.execution_id,
            node=self.node,
            status=result.status,
            processor_dir=self.settings.processor_dir,
            syslog_address=self.settings.syslog_address,
            fluent_host=self.settings.fluent_host,
            fluent_port=self.settings.fluent_port,
            fluent_tag=self.settings.fluent_tag,
        )
        try:
            processed = await asyncio.to_thread(process_output, run.processors, output, ctx)
        except Exception as exc:  # task boundary of the processors: their bug must not lose the run's result
            log.exception("output processors crashed job=%s exec=%s", request.job_name, request.execution_id)
            self.metrics.processor_errors.inc(processor="all")
            kept = output.rstrip("\n") + "\n" if forwards_output(run.processors) and output else ""
            return f"{kept}[cronbus] output processors failed: {exc!r}\n"
        for name in processed.failed:
            self.metrics.processor_errors.inc(processor=name)
        return processed.output

    def _stream(self, run: Run, chunk: bytes) -> None:
        if not run.reported:
            if run.ended:
                return  # the run ended before it was reported started: its result carries all of its output
            self._reports.now(run)  # output comes after the start, never before
        request = run.request
        self.connection.send_reliable(
            OutputProduced(
                seq=self.connection.outbox.next_seq(),
                execution_id=request.execution_id,
                job_name=request.job_name,
                chunk=chunk.decode("utf-8", errors="replace"),
            )
        )

    async def _finish(self, result: ExecutionFinished) -> None:
        """Journals the result (durably), marks the id finished, and sends it until acked."""
        await self.journal.save(result)
        await self.seen.finish(result.execution_id)
        self._remember(result)
        self.connection.outbox.drop_output(result.execution_id)
        self.connection.send_reliable(result)
        log.log(
            logging.DEBUG if result.status == "success" else logging.INFO,  # runs that went well are the records' job
            "finished job=%s exec=%s status=%s exit_code=%s reason=%s",
            result.job_name,
            result.execution_id,
            result.status,
            result.exit_code,
            result.reason,
        )

    def _remember(self, result: ExecutionFinished) -> None:
        self.results[result.execution_id] = result
        self.results.move_to_end(result.execution_id)
        while len(self.results) > RESULTS_KEPT:
            self.results.popitem(last=False)
