"""The scheduler process: campaigns for leadership; while leader, plans, records and dispatches runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, Literal, assert_never

import msgspec

from cronbus.common import messages as m
from cronbus.common.bus import Bus, send_now
from cronbus.common.consul import keys
from cronbus.common.consul.catalog import Registration
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.lock import LeaderLock, LeaseKeeper
from cronbus.common.consul.store import Store
from cronbus.common.consul.view import JobView
from cronbus.common.errors import ConsulError, ValidationError
from cronbus.common.history import open_history_store
from cronbus.common.lifecycle import reload_on_sighup, tune_gc
from cronbus.common.metrics import serve_metrics
from cronbus.common.models import Job, now_utc
from cronbus.common.schedule import plan_late
from cronbus.common.settings import SchedulerSettings
from cronbus.common.statsd import statsd_sender
from cronbus.common.tracing import tracing
from cronbus.services.scheduler.archive import ArchiveSettings, HistoryArchive
from cronbus.services.scheduler.dispatcher import Dispatcher
from cronbus.services.scheduler.launching import LaunchOutcome
from cronbus.services.scheduler.leadership import Campaign
from cronbus.services.scheduler.ledger import Ledger
from cronbus.services.scheduler.metrics import SchedulerMetrics
from cronbus.services.scheduler.notify import Notifier
from cronbus.services.scheduler.planner import Planner
from cronbus.services.scheduler.registry import ExecutorRegistry
from cronbus.services.scheduler.routing import InOrderAcks, RouterReader
from cronbus.services.scheduler.takeover import Takeover

log = logging.getLogger(__name__)
DISABLE_TRIES = 8  # writes of a failing job's disable (check-and-set conflicts, Consul errors), about a minute

# Launches are recorded up to this long before their slot and sent once their round is recorded; executors start
# them at the slot (a run of a job disabled meanwhile is recorded skipped). So the runs of a herd of thousands due at
# one second are in Consul and on their executors when the second comes, and none waits for the leader then. (Not
# longer: a leader deposed right after recording must not have recorded slots that come after its successor began.)
# Not a whole second: the next second's launches are then recorded 0.1 s after this second's slot, not at it, when
# executors start this second's runs (on a host they share with the leader or Consul, both would want the CPU).
LEAD = timedelta(seconds=0.9)
# A herd (thousands of jobs due at one instant) is recorded earlier: its records take Consul most of a second, and
# its runs must be on their executors before the instant. Still less than a failover takes (the lock TTL, 2 s).
HERD = 2000
HERD_LEAD = timedelta(seconds=1.5)
TICK_S = 0.1
DAYS_KEPT = 400  # days of execution stats kept (GET /v1/stats?days= goes up to 365)


class SchedulerService:
    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        host, port = settings.consul.host_port
        self.consul = ConsulClient(host, port, settings.consul.token)
        self.store = Store(self.consul)
        self.view = JobView(self.store)
        self.bus = Bus.from_settings(settings.bus, "scheduler")
        advertise = settings.advertise_host or settings.bind_host
        self.router, router_port = self.bus.router(settings.bind_host, settings.router_port)
        self.xpub, pub_port = self.bus.xpub(settings.bind_host, settings.pub_port)
        self.registration = Registration(
            self.consul,
            service=keys.SCHEDULER_SERVICE,
            service_id=f"scheduler-{settings.node_name}",
            address=advertise,
            port=router_port,
            tags={"node": settings.node_name, "pub_port": str(pub_port)},
            ttl_s=settings.lock_ttl_s,
        )
        self.lock = LeaderLock(
            self.consul, name=settings.node_name, check_id=self.registration.check_id, ttl_s=settings.lock_ttl_s
        )
        self.router_endpoint = f"tcp://{advertise}:{router_port}"
        self.pub_endpoint = f"tcp://{advertise}:{pub_port}"
        self.dead_after_s = settings.bus.heartbeat_interval_s * settings.bus.heartbeat_liveness
        self.registry = ExecutorRegistry(self.dead_after_s)
        self.planner = Planner()
        self.dispatcher: Dispatcher | None = None  # set while leading, once recovery is done
        self.metrics = SchedulerMetrics(settings.job_metrics)
        self.notifier = Notifier(settings.notify, registry=self.metrics.registry, node_name=settings.node_name)
        self.tracing = tracing("scheduler", settings.otel_endpoint)
        self.takeover = Takeover(self.store, self, self._launch)
        self.campaign = Campaign(
            self.lock, settings.node_name, settings.lock_ttl_s, self._lead, self._term_ended,
            endpoints=(self.router_endpoint, self.pub_endpoint), curve_key=self.bus.public_key,
        )  # fmt: skip
        self.history = open_history_store(settings.history_store, self.store)
        self.archive = HistoryArchive(
            self.store,
            self.history,
            self.metrics.registry,
            ArchiveSettings(
                history_limit=settings.history_limit,
                max_age_s=settings.history_max_age_s,
                settle_s=settings.history_settle_s,
            ),
            protect=lambda: self.dispatcher.runs.ids() if self.dispatcher else (),
        )
        self.metrics.registry.gauge("cronbus_planned_jobs", "Jobs with a planned next fire.", lambda: len(self.planner))
        self.metrics.registry.gauge(
            "cronbus_unreadable_records_total",
            "Stored values read that did not decode (each logged with its key); readers go on without them.",
            lambda: self.store.unreadable_total,
        )
        self.metrics.registry.gauge(
            "cronbus_executions_waiting",
            "Runs due and held at the leader until their executor has a free slot.",
            lambda: self.dispatcher.waiting() if self.dispatcher else 0,
        )
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._launching: set[asyncio.Task[None]] = set()
        self._acks = InOrderAcks(lambda identity, seq: self.send_to(identity, m.Ack(seq=seq)))
        self._leader_known, self._leader_read_at = "", -1.0  # see _leader_name
        self._children_of: dict[str, list[Job]] | None = None  # parent job -> its children (see children)
        self.view.on_jobs_changed(self._jobs_changed)

    # ---- process ---------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        tune_gc()
        keeper = LeaseKeeper(self.lock, self.settings.lock_ttl_s / 4)
        try:
            await self.registration.register_with_retry(stop)
            await self.lock.renew()  # the check passing before the first campaign round creates a session on it
            keeper.start()
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.view.run(stop, statuses=False)),
                    tg.create_task(self._read_router()),
                    tg.create_task(self._read_xpub()),
                    tg.create_task(self.campaign.run(stop)),
                    tg.create_task(self.notifier.run(stop)),
                ]
                tasks.append(tg.create_task(reload_on_sighup(self._reload_keys, stop)))  # without keys: a no-op
                if (sender := statsd_sender(self.metrics.registry, self.settings.statsd)) is not None:
                    tasks.append(tg.create_task(sender.run(stop)))
                if self.settings.metrics_port:
                    tasks.append(
                        tg.create_task(
                            serve_metrics(
                                self.metrics.registry, self.settings.bind_host, self.settings.metrics_port, stop
                            )
                        )
                    )
                await stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            await asyncio.to_thread(keeper.stop)
            self.dispatcher = None
            await self.lock.release()
            await self.registration.deregister()
            await asyncio.to_thread(self.tracing.close)  # the last spans, bounded by the exporter's timeout
            await self.history.close()
            await self.consul.close()
            self.router.close()
            self.xpub.close()
            self.bus.close()

    # ---- leadership ------------------------------------------------------------------------------------

    def _term_ended(self) -> None:
        self.dispatcher = None

    async def _guard_leader_record(self, lost: asyncio.Event) -> None:
        """Writes the leader record again when someone overwrote it (see LeaderLock.guard_record)."""
        while not lost.is_set() and self.lock.is_leader():
            try:
                await self.lock.guard_record()
            except ConsulError as exc:
                log.debug("cannot watch the leader record: %s", exc)
                await asyncio.sleep(self.settings.lock_ttl_s / 4)

    async def _lead(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        term = self.lock.term
        await self.view.jobs_ready.wait()
        await self.view.refresh_jobs()  # the freshest definitions, not what the last blocking query saw
        _, statuses, unreadable = await self.store.list_statuses_checked()
        ledger = Ledger(self.store, self.lock.session, statuses, await self.store.list_day_stats())
        dispatcher = Dispatcher(
            term=term,
            ledger=ledger,
            registry=self.registry,
            wire=self,
            jobs=self,
            ack_timeout_s=self.settings.bus.ack_timeout_s,
            history_limit=self.settings.history_limit,
            metrics=self.metrics,
            notifier=self.notifier,
            tracing=self.tracing,
        )
        self.registry.executors.clear()
        self._acks.clear()
        async with asyncio.TaskGroup() as tg:
            ledger_task = tg.create_task(ledger.run())
            await self.takeover.adopt_unfinished(dispatcher, statuses)
            await self.takeover.adopt_unlisted(dispatcher, unreadable)
            kept_from = (now_utc() - timedelta(days=DAYS_KEPT)).strftime("%Y-%m-%d")
            for unit in ledger.old_days(kept_from):  # GET /v1/stats shows a year at most
                ledger.submit(unit)
            self.dispatcher = dispatcher
            self.metrics.leader.set(1)
            self.metrics.term.set(term)
            log.info("leading term=%d jobs=%d unfinished=%d", term, len(self.view.jobs), len(dispatcher.runs))
            await self._catch_up(dispatcher, ledger)
            tasks = [
                tg.create_task(self._plan(dispatcher, lost, tg)),
                tg.create_task(self._tick(dispatcher, lost)),
                tg.create_task(self._guard_leader_record(lost)),
                tg.create_task(self.archive.run(ledger, lost)),  # moves settled records, trims by age
            ]
            done = asyncio.create_task(_first(stop, lost))
            await done
            lost.set()
            self.dispatcher = None
            self.metrics.leader.set(0)
            self.metrics.term.set(0)
            for task in [*tasks, *self._launching, ledger_task]:
                task.cancel()

    async def _catch_up(self, dispatcher: Dispatcher, ledger: Ledger) -> None:
        """Slots that passed while no leader dispatched: run or record them per misfire_policy. Slots after
        `now` are the planner's, and every job is planned from that same `now`, so none falls in between."""
        now = now_utc()
        jobs = [s.job for s in self.view.jobs.values() if s.job is not None]
        for job in jobs:
            self._plan_job(job, ledger, after=now)
        await asyncio.gather(*(self.takeover.catch_up(dispatcher, ledger, job, now) for job in jobs))

    def _late_run(self, job: Job) -> None:
        """An `@after` job written once its time has passed: it runs now (within its grace period) or is recorded
        missed, in a task of the term (docs/semantics.md, "@after")."""
        dispatcher = self.dispatcher
        if dispatcher is None or job.disabled or not job.schedule.lstrip().startswith("@after"):
            return
        try:
            plan = plan_late(job, dispatcher.ledger.status(job.name).last_slot, now_utc())
        except ValidationError:
            return  # the planner reports it
        if not plan.run and not plan.missed:
            return

        async def late() -> None:
            for slot, reason in plan.missed:
                await dispatcher.record_missed(job, slot, "missed", reason)
            for slot in plan.run:
                await self._launch(dispatcher, job, slot)

        task = asyncio.create_task(late())
        self._launching.add(task)
        task.add_done_callback(self._launching.discard)

    def _plan_job(self, job: Job, ledger: Ledger | None, after: datetime | None = None) -> None:
        after = after or now_utc()
        last = ledger.status(job.name).last_slot if ledger else None
        if last is not None and last > after:
            after = last
        problem = self.planner.set_job(job, after)
        if problem:
            log.warning("job cannot be scheduled job=%s: %s", job.name, problem)

    def _jobs_changed(self, changed: set[str], removed: set[str]) -> None:
        self._children_of = None
        ledger = self.dispatcher.ledger if self.dispatcher else None
        for name in removed:
            self.planner.remove(name)
            if self.dispatcher is not None:
                self.dispatcher.job_deleted(name)
        for name in changed:
            job = self.job(name)
            if job is not None and self.dispatcher is not None:
                self.dispatcher.job_exists(name)
            if job is None:
                self.planner.remove(name)
                stored = self.view.jobs.get(name)
                if stored is not None and stored.problem:
                    log.warning("invalid job definition in Consul job=%s: %s", name, stored.problem)
            else:
                self._plan_job(job, ledger)
                self._late_run(job)
                if job.disabled and self.dispatcher is not None:
                    self.dispatcher.cancel_ahead(name)
        self._wake.set()

    async def _plan(self, dispatcher: Dispatcher, lost: asyncio.Event, tg: asyncio.TaskGroup) -> None:
        """Pops due slots LEAD ahead and launches them in a task per round: the round's records are written
        together, then its runs are sent (their executors start them at the slot), while the next slots are
        recorded. A forbid or replace job gets a task of its own that records its launch at the slot."""
        while not lost.is_set():
            self._wake.clear()
            now = now_utc()
            nxt = self.planner.peek()
            lead = HERD_LEAD if nxt is not None and self.planner.planned_at(nxt) >= HERD else LEAD
            if nxt is None or nxt > now + lead:
                timeout = 1.0 if nxt is None else min(1.0, (nxt - now - lead).total_seconds())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(timeout, 0.001))
                continue
            due = self.planner.pop_due(now + LEAD if lead == LEAD else nxt)  # a herd comes alone
            self.metrics.fires.inc(len(due))
            launches = [(job, slot) for name, slot in due if (job := self.job(name)) is not None]
            # Whether a forbid or replace job's previous run still runs is decided at the slot, not ahead of it.
            rounds = [[(j, s) for j, s in launches if j.concurrency == "allow"]]
            rounds.extend([(j, s)] for j, s in launches if j.concurrency != "allow")
            for batch in rounds:
                if batch:
                    task = tg.create_task(self._launch_due(dispatcher, batch, wait=batch[0][0].concurrency != "allow"))
                    self._launching.add(task)
                    task.add_done_callback(self._launching.discard)

    async def _launch_due(self, dispatcher: Dispatcher, due: list[tuple[Job, datetime]], *, wait: bool) -> None:
        """The planner's launches of one round, together (one task, records batched); with `wait`, recorded at the
        slot rather than ahead of it."""
        try:
            if wait:
                await asyncio.sleep(max(0.0, (min(slot for _, slot in due) - now_utc()).total_seconds()))
            if not self.lock.is_leader():
                return
            due = [(job, slot) for job, slot in due if job.expires_at is None or slot <= job.expires_at]
            for (job, _), (outcome, ids) in zip(due, await dispatcher.launch_many(due), strict=True):
                if outcome == "exists":
                    try:
                        await self.takeover.adopt_launched(dispatcher, job, ids)
                    except ConsulError as exc:  # its result is still adopted when it comes (on_finished)
                        log.warning("could not adopt an earlier launch job=%s: %s", job.name, exc)
        except Exception:  # task boundary: failed launches must not end the term
            log.exception("launches failed count=%d", len(due))

    async def _launch(
        self,
        dispatcher: Dispatcher,
        job: Job,
        slot: datetime,
        *,
        manual: bool = False,
        trace: dict[str, str] | None = None,
    ) -> LaunchOutcome | Literal["expired"]:
        if not self.lock.is_leader():
            return "fenced"
        if not manual and job.expires_at is not None and slot > job.expires_at:
            return "expired"
        outcome, ids = await dispatcher.launch(job, slot, manual=manual, trace=trace)
        if outcome == "exists":
            await self.takeover.adopt_launched(dispatcher, job, ids)
        return outcome

    async def _tick(self, dispatcher: Dispatcher, lost: asyncio.Event) -> None:
        beat = 0.0
        loop = asyncio.get_running_loop()
        while not lost.is_set():
            if not self.lock.is_leader():
                lost.set()
                return
            await dispatcher.tick()
            self.metrics.jobs.set(len(self.view.jobs))
            self.metrics.active.set(len(dispatcher.runs))
            if loop.time() - beat >= self.settings.bus.heartbeat_interval_s:
                beat = loop.time()
                for state in list(self.registry.executors.values()):
                    self.send_to(state.identity, m.LeaderHeartbeat(term=dispatcher.term))
                for name in dispatcher.jobs_to_trim():
                    with contextlib.suppress(ConsulError):
                        await dispatcher.trim(name, await self.store.execution_keys(name))
            await asyncio.sleep(TICK_S)

    # ---- bus -------------------------------------------------------------------------------------------

    # The bus and the jobs as the leader's run bookkeeping sees them (ports.Wire, ports.Jobs).

    def is_leader(self) -> bool:
        return self.lock.is_leader()

    def publish(self, topic: bytes, msg: msgspec.Struct) -> None:
        if topic.startswith(m.OUTPUT_TOPIC) and not self.registry.has_output_subscriber(topic):
            return  # nobody follows this run's output (a stream also reads the record every second)
        send_now(self.xpub, [topic, m.encode(msg)])

    def send_to(self, identity: bytes, msg: msgspec.Struct) -> None:
        send_now(self.router, [identity, m.encode(msg)])

    async def _read_xpub(self) -> None:
        while True:
            frames = await self.xpub.recv_multipart()
            self.registry.subscription(frames[0])
            self._wake.set()

    async def _read_router(self) -> None:
        await RouterReader(self.router, keyed=self.bus.keys is not None, handle=self._on_message,
                           send_to=self.send_to).run()  # fmt: skip

    async def _reload_keys(self) -> None:
        """SIGHUP: the allow-lists again; a key that lost its place loses its connections too (Bus.rebind)."""
        lost = await asyncio.to_thread(self.bus.reload_keys)
        if lost:
            await self.bus.rebind(lost)

    async def _on_message(self, identity: bytes, msg: m.ToLeader) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None:
            leader = await self._leader_name()
            self.send_to(identity, m.NotLeader(leader=leader))
            return
        match msg:
            case m.RunJob() | m.KillExecution() | m.ListBusy():
                self._on_control(identity, msg, dispatcher)
            case m.Hello():
                self._on_hello(identity, msg, dispatcher)
            case m.ExecutorHeartbeat():
                if self.registry.seen(msg.node, msg.running) is None:
                    self.send_to(identity, m.NotLeader(leader=self.settings.node_name))  # says hello again
            case _:
                self._on_report(identity, msg, dispatcher)

    def _on_report(
        self,
        identity: bytes,
        msg: m.DispatchAccepted | m.DispatchRefused | m.ExecutionStarted | m.OutputProduced | m.ExecutionFinished,
        dispatcher: Dispatcher,
    ) -> None:
        """What an executor reports of a run it was sent."""
        match msg:
            case m.DispatchAccepted():
                self.registry.seen(msg.node)
                dispatcher.on_accepted(msg)
            case m.DispatchRefused():
                self.registry.seen(msg.node)
                self._background(dispatcher.on_refused(msg))  # may write: never block the reader on Consul
            case m.ExecutionStarted():
                self.registry.seen(msg.node)
                self._after(dispatcher.on_started(msg), identity, msg.seq)
            case m.OutputProduced():
                self._after(dispatcher.on_output(msg), identity, msg.seq)
            case m.ExecutionFinished():
                self.registry.seen(msg.node)
                self._after(dispatcher.on_finished(msg), identity, msg.seq)
            case _:
                assert_never(msg)

    def _on_control(
        self, identity: bytes, msg: m.RunJob | m.KillExecution | m.ListBusy, dispatcher: Dispatcher
    ) -> None:
        """A request of the gateway or the CLI."""
        match msg:
            case m.RunJob():
                self._background(self._reply(identity, self._run_job(dispatcher, msg)))
            case m.KillExecution():
                self._background(self._reply(identity, self._kill(dispatcher, msg)))
            case m.ListBusy():
                self.send_to(identity, m.ControlReply(req_id=msg.req_id, ok=True, executions=dispatcher.busy()))
            case _:
                assert_never(msg)

    def _on_hello(self, identity: bytes, msg: m.Hello, dispatcher: Dispatcher) -> None:
        if msg.protocol != m.PROTOCOL_VERSION:
            log.warning("refused executor %s: protocol %d, not %d", msg.node, msg.protocol, m.PROTOCOL_VERSION)
            return
        if msg.max_term > dispatcher.term:
            # This executor saw a later term than ours: a term was handed out that this one does not
            # exceed (the term key was lost or damaged), and it would refuse our dispatches. Step down;
            # the next term is higher than what it saw.
            log.error("executor %s saw term %d, later than this term %d: stepping down to take a higher one",
                      msg.node, msg.max_term, dispatcher.term)  # fmt: skip
            self._background(self.lock.step_down_past(msg.max_term))
            return
        self.registry.hello(identity, msg)
        self._acks.reset(identity)
        welcome = m.Welcome(leader=self.settings.node_name, term=dispatcher.term, revision=m.REVISION)
        self.send_to(identity, welcome)
        dispatcher.runs.confirm(msg.node, msg.running)
        log.info("executor joined node=%s tags=%s", msg.node, msg.tags)

    def _after(self, work: Coroutine[object, object, None], identity: bytes, seq: int) -> None:
        """Runs a result handler off the reader, so results of many runs commit in one batch, and acknowledges
        the message once what it wrote is committed (see InOrderAcks)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._acks.add(identity, seq, task)

    def _background(self, work: Coroutine[object, object, None]) -> None:
        """Runs work that waits on Consul off the router's reader (which must keep reading heartbeats)."""

        async def guarded() -> None:
            try:
                await work
            except Exception:  # a task boundary: log it; the peer resends or times out
                log.exception("background handler failed")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, identity: bytes, reply: Coroutine[object, object, m.ControlReply]) -> None:
        self.send_to(identity, await reply)

    async def _kill(self, dispatcher: Dispatcher, msg: m.KillExecution) -> m.ControlReply:
        ok = await dispatcher.kill(msg.execution_id)
        error = "" if ok else f"execution {msg.execution_id} is not running"
        return m.ControlReply(req_id=msg.req_id, ok=ok, code=202 if ok else 404, error=error)

    async def _run_job(self, dispatcher: Dispatcher, msg: m.RunJob) -> m.ControlReply:
        if msg.protocol != m.PROTOCOL_VERSION:
            error = f"protocol {msg.protocol} is not supported (this scheduler speaks {m.PROTOCOL_VERSION})"
            return m.ControlReply(req_id=msg.req_id, ok=False, code=400, error=error)
        # Read afresh: a client that just wrote the job may run it before our blocking query has seen it.
        try:
            stored = await self.store.get_job(msg.job_name)
        except ConsulError as exc:
            return m.ControlReply(req_id=msg.req_id, ok=False, code=503, error=str(exc))
        job = stored.job if stored is not None else None
        if job is None:
            why = stored.problem if stored is not None else "not found"
            return m.ControlReply(req_id=msg.req_id, ok=False, code=404, error=f"job {msg.job_name} {why}")
        if not self.registry.matching(job.tags):
            shown = ", ".join(f"{k}={v}" for k, v in sorted((job.tags or {}).items())) or "(any)"
            return m.ControlReply(req_id=msg.req_id, ok=False, code=503, error=f"no executor matches tags {shown}")
        outcome = await self._launch(dispatcher, job, now_utc(), manual=True, trace=msg.trace)
        if outcome == "skipped":
            return m.ControlReply(req_id=msg.req_id, ok=False, code=409,
                                  error=f"job {job.name} is already running and its concurrency is forbid")  # fmt: skip
        if outcome != "launched":
            return m.ControlReply(req_id=msg.req_id, ok=False, code=503, error=f"run not launched: {outcome}")
        return m.ControlReply(req_id=msg.req_id, ok=True, code=202)

    # ---- jobs --------------------------------------------------------------------------------------------

    def job(self, name: str) -> Job | None:
        stored = self.view.jobs.get(name)
        return stored.job if stored is not None else None

    def children(self, name: str) -> list[Job]:
        if self._children_of is None:  # built again after any change of the job set
            self._children_of = {}
            for stored in self.view.jobs.values():
                if stored.job is not None and stored.job.parent_job:
                    self._children_of.setdefault(stored.job.parent_job, []).append(stored.job)
        return self._children_of.get(name, [])

    def delete_ephemeral(self, name: str) -> None:
        stored = self.view.jobs.get(name)
        if stored is None:
            return

        async def delete() -> None:
            try:
                await self.store.delete_job(name, cas=stored.modify_index)
                log.info("ephemeral job deleted after its successful run job=%s", name)
            except (ConsulError, Exception) as exc:  # task boundary
                log.warning("could not delete ephemeral job=%s: %s", name, exc)

        task = asyncio.create_task(delete())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def disable_failing(self, name: str, reason: str) -> None:
        async def disable() -> None:
            for attempt in range(DISABLE_TRIES):
                try:
                    # Read afresh and check-and-set, so an edit made meanwhile is kept: disabled on top of it.
                    stored = await self.store.get_job(name)
                    if stored is None or stored.definition is None or stored.definition.disabled:
                        return  # deleted, unreadable, or disabled already
                    job = msgspec.structs.replace(stored.definition, disabled=True)
                    if await self.store.put_job(job, cas=stored.modify_index):
                        log.warning("job disabled job=%s: %s", name, reason)
                        return
                except ConsulError as exc:
                    log.warning("could not disable job=%s yet (%s): %s", name, reason, exc)
                await asyncio.sleep(min(2.0**attempt, 10.0))
            log.error("job not disabled job=%s after %d tries (%s)", name, DISABLE_TRIES, reason)

        task = asyncio.create_task(disable())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _leader_name(self) -> str:
        """Who leads, for executors that still talk to this standby; read at most once a second (they may be
        many, with a burst of results each)."""
        now = time.monotonic()
        if now - self._leader_read_at >= 1.0:
            self._leader_read_at = now
            with contextlib.suppress(ConsulError):
                found = await self.store.get_leader()
                self._leader_known = found[0].name if found is not None else ""
        return self._leader_known


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
