"""The executor's outbox of unacknowledged messages: cumulative acks, restored messages, dropped output."""

from __future__ import annotations

from cronbus.common.messages import ExecutionFinished, OutputProduced
from cronbus.services.executor.connection import Outbox


def _output(seq: int, exec_id: str) -> OutputProduced:
    return OutputProduced(seq=seq, execution_id=exec_id, job_name="j", chunk=f"chunk {seq}")


def _finished(seq: int, exec_id: str) -> ExecutionFinished:
    return ExecutionFinished(seq=seq, execution_id=exec_id, job_name="j", node="n", status="success")


def test_an_ack_covers_what_was_sent_before_it_not_lower_seqs_sent_after() -> None:
    """Results are sent as their journal writes complete, not in seq order: acknowledging one must not drop a
    lower seq that the leader has not received yet."""
    box = Outbox()
    base = box.next_seq()
    box.add(_output(base + 5, "a"))
    box.add(_output(base + 7, "a"))
    box.add(_finished(base + 2, "old"))  # a lower seq, sent after the others (a restored or slower result)
    assert [m.seq for m in box.pending()] == [base + 2, base + 5, base + 7]
    assert [m.seq for m in box.ack(base + 7)] == [base + 5, base + 7]
    assert [m.seq for m in box.pending()] == [base + 2]
    assert box.ack(base + 7) == []
    assert [m.seq for m in box.ack(base + 2)] == [base + 2]
    assert box.next_seq() > base + 7


def test_a_resent_message_is_covered_by_acks_of_what_follows_it() -> None:
    box = Outbox()
    first, second = box.next_seq(), box.next_seq()
    box.add(_output(first, "a"))
    box.add(_output(second, "a"))
    assert [m.seq for m in box.due(0)] == [first, second]  # a new session: both sent again, in seq order
    assert [m.seq for m in box.ack(first)] == [first]
    box.sending(second)
    assert [m.seq for m in box.ack(second)] == [second]


def test_a_finished_run_drops_its_unacked_output_and_is_found_by_id() -> None:
    box = Outbox()
    seqs = [box.next_seq() for _ in range(4)]
    box.add(_output(seqs[0], "a"))
    box.add(_output(seqs[1], "b"))
    box.add(_output(seqs[2], "a"))
    box.add(_finished(seqs[3], "a"))
    box.drop_output("a")
    assert [m.seq for m in box.pending()] == [seqs[1], seqs[3]]
    found = box.finished("a")
    assert found is not None and found.seq == seqs[3]
    assert box.finished("b") is None
    assert [m.seq for m in box.ack(seqs[3])] == [seqs[1], seqs[3]]
    assert box.finished("a") is None and box.pending() == []


def test_due_returns_what_waited_long_enough_and_marks_it_sent() -> None:
    box = Outbox()
    box.add(_output(box.next_seq(), "a"))
    assert len(box.due(0)) == 1
    assert box.due(60) == []
