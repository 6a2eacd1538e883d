"""The leader's view of executors: who said hello, who still heartbeats, who listens, and who gets a run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec

from cronbus.common.bus import node_topic
from cronbus.common.errors import UnavailableError
from cronbus.common.messages import OUTPUT_TOPIC, REVISION, Hello

log = logging.getLogger(__name__)


class ExecutorState(msgspec.Struct, kw_only=True):
    node: str
    identity: bytes  # ROUTER identity of its DEALER
    tags: dict[str, str]
    capacity: int
    running: int = 0
    last_seen: float = 0.0
    subscribed: bool = False  # its node topic reached our XPUB, so a dispatch published now reaches it
    revision: int = 0  # of the protocol both speak (messages.REVISION)


class NoTargetError(UnavailableError):
    """No live executor matches a job's tags."""


def parse_job_tags(tags: dict[str, str] | None) -> tuple[dict[str, str], int | None]:
    """Job tags {"role": "web:2"} into the values to match and the count cap (the lowest among the tags)."""
    wanted: dict[str, str] = {}
    count: int | None = None
    for key, raw in (tags or {}).items():
        value, sep, number = raw.rpartition(":")
        if sep and number.isdigit() and value:
            wanted[key] = value
            count = int(number) if count is None else min(count, int(number))
        else:
            wanted[key] = raw
    return wanted, count


class ExecutorRegistry:
    """Executors known to this leader. An executor silent for `dead_after_s` is dead (Paranoid Pirate)."""

    def __init__(self, dead_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.dead_after_s = dead_after_s
        self._clock = clock
        self.executors: dict[str, ExecutorState] = {}
        self._subscriptions: set[bytes] = set()
        self._output_subscriptions: set[bytes] = set()  # those that can match an output topic

    def hello(self, identity: bytes, msg: Hello) -> ExecutorState:
        state = ExecutorState(
            node=msg.node,
            identity=identity,
            tags=msg.tags,
            capacity=msg.capacity,
            running=len(msg.running),
            last_seen=self._clock(),
            subscribed=node_topic(msg.node) in self._subscriptions,
            revision=min(msg.revision, REVISION),
        )
        self.executors[msg.node] = state
        return state

    def seen(self, node: str, running: int | None = None) -> ExecutorState | None:
        state = self.executors.get(node)
        if state is not None:
            state.last_seen = self._clock()
            if running is not None:
                state.running = running
        return state

    def subscription(self, frame: bytes) -> None:
        """An XPUB frame: b'\\x01topic' subscribes, b'\\x00topic' unsubscribes."""
        if not frame:
            return
        topic = frame[1:]
        output = topic.startswith(OUTPUT_TOPIC) or OUTPUT_TOPIC.startswith(topic)
        if frame[0] == 1:
            self._subscriptions.add(topic)
            if output:
                self._output_subscriptions.add(topic)
        elif frame[0] == 0:
            self._subscriptions.discard(topic)
            self._output_subscriptions.discard(topic)
        for state in self.executors.values():
            if node_topic(state.node) == topic:
                state.subscribed = frame[0] == 1

    def has_output_subscriber(self, topic: bytes) -> bool:
        """Whether anyone subscribed to a prefix of output `topic` (XPUB reports a topic's subscribers and its last
        one leaving)."""
        return any(topic.startswith(prefix) for prefix in self._output_subscriptions)

    def reap(self) -> list[ExecutorState]:
        """Removes and returns the executors that missed their heartbeats."""
        deadline = self._clock() - self.dead_after_s
        dead = [s for s in self.executors.values() if s.last_seen < deadline]
        for state in dead:
            del self.executors[state.node]
            log.warning("executor dead node=%s (no heartbeat for %.1fs)", state.node, self.dead_after_s)
        return dead

    def live(self) -> list[ExecutorState]:
        return [s for s in self.executors.values() if s.subscribed]

    def is_live(self, node: str) -> bool:
        state = self.executors.get(node)
        return state is not None and state.subscribed

    def matching(self, tags: dict[str, str] | None) -> list[ExecutorState]:
        wanted, _ = parse_job_tags(tags)
        return [s for s in self.live() if _has(s, wanted)]

    def matches(self, node: str, tags: dict[str, str] | None) -> bool:
        """Whether `node` is live and has every tag a job with `tags` asks for."""
        state = self.executors.get(node)
        return state is not None and state.subscribed and _has(state, parse_job_tags(tags)[0])

    def select(self, tags: dict[str, str] | None, exclude: frozenset[str] = frozenset()) -> list[str]:
        """Target nodes for one run (docs/semantics.md §5): every tag must match; `value:count` caps the number of
        executors; no tags means exactly one. Least busy first. Raises NoTargetError."""
        wanted, count = parse_job_tags(tags)
        if not wanted:
            count = 1
        candidates = [s for s in self.matching(tags) if s.node not in exclude]
        if not candidates:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(wanted.items())) or "(any)"
            raise NoTargetError(f"no executor matches tags {shown}")
        candidates.sort(key=lambda s: (s.running / max(s.capacity, 1), s.running, s.node))
        chosen = candidates if count is None else candidates[:count]
        for state in chosen:
            state.running += 1  # counted now, so a burst of launches spreads before heartbeats catch up
        return [s.node for s in chosen]


def _has(state: ExecutorState, wanted: dict[str, str]) -> bool:
    return all(state.tags.get(k) == v for k, v in wanted.items())
