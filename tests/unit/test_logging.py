"""JSON log lines carry the job, execution, node and term of a `key=value` message as fields of their own."""

from __future__ import annotations

import json
import logging

from cronbus.common.logging import JsonFormatter, context_fields


def _line(msg: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("cronbus.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    entry = json.loads(JsonFormatter().format(record))
    assert isinstance(entry, dict)
    return entry


def test_key_value_context_becomes_json_fields() -> None:
    entry = _line("finished job=%s exec=%s status=%s node=%s", "backup-db", "backup-db.20250101T000000.000000Z.1",
                  "success", "e1")  # fmt: skip
    assert entry["job"] == "backup-db"
    assert entry["exec"] == "backup-db.20250101T000000.000000Z.1"
    assert entry["node"] == "e1" and entry["status"] == "success"
    assert entry["msg"] == "finished job=backup-db exec=backup-db.20250101T000000.000000Z.1 status=success node=e1"
    assert entry["level"] == "info" and entry["logger"] == "cronbus.test"


def test_term_is_a_number_and_punctuation_ends_a_value() -> None:
    assert context_fields("leading term=12 jobs=3") == {"term": 12}
    assert context_fields("ignored kill exec=j.1: stale term 3 < 4") == {"exec": "j.1"}
    assert context_fields("dispatch for others job=a, targets=[x]") == {"job": "a"}


def test_only_known_keys_of_the_first_line_count() -> None:
    # A job's output logged under the first line must not invent fields, nor must look-alike keys.
    assert context_fields("output job=j exec=e\nnode=evil job=other") == {"job": "j", "exec": "e"}
    assert context_fields("subjob=x myexec=y reason=z") == {}
    assert context_fields("job=first job=second") == {"job": "first"}


def test_extra_fields_win_over_the_text() -> None:
    entry = _line("run job=%s", "from-text", job="from-extra", term=7)
    assert entry["job"] == "from-extra" and entry["term"] == 7


def test_messages_without_context_have_no_context_fields() -> None:
    entry = _line("metrics on http://%s:%d/metrics", "127.0.0.1", 9100)
    assert set(entry) == {"ts", "level", "logger", "msg"}
