"""The executor's outbox of unacknowledged messages: cumulative acks, restored messages, dropped output."""

from __future__ import annotations

from cronbus.common.messages import ExecutionFinished, OutputProduced
from cronbus.services.executor.connection import Outbox


def _output(seq: int, exec_id: str) -> OutputProduced:
    return OutputProduced(seq=seq, execution_id=exec_id, job_name="j", chunk=f"chunk {seq}")


def _finished(seq: int, exec_id: str) -> ExecutionFinished:
    return ExecutionFinished(seq=seq, execution_id=exec_id, job_name="j", node="n", status="success")


def test_acks_are_cumulative_and_restored_messages_keep_seq_order() -> None:
    box = Outbox()
    base = box.next_seq()
    for seq in (base + 5, base + 7):
        box.add(_output(seq, "a"))
    box.add(_finished(base + 2, "old"))  # restored from the journal, below what was sent since
    assert [m.seq for m in box.pending()] == [base + 2, base + 5, base + 7]
    assert [m.seq for m in box.ack(base + 5)] == [base + 2, base + 5]
    assert [m.seq for m in box.pending()] == [base + 7]
    assert box.ack(base + 5) == []
    assert box.next_seq() > base + 7


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
