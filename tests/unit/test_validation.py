"""Job validation: every rule and its Dkron-style message, normalisation, executor configs, parents and cycles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cronbus.common.errors import NotFoundError, ValidationError
from cronbus.common.executor_config import validate_executor_config
from cronbus.common.models import ZERO_TIME, Job
from cronbus.common.validation import (
    check_parent,
    find_cycle,
    illegal_name_character,
    order_parents_first,
    validate_job,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def job(**fields: object) -> Job:
    base: dict[str, object] = {
        "name": "job1",
        "schedule": "@every 10s",
        "executor": "shell",
        "executor_config": {"command": "date"},
    }
    base.update(fields)
    return Job(**base)  # type: ignore[arg-type]


def reason(candidate: Job, existing: Job | None = None) -> str:
    with pytest.raises(ValidationError) as info:
        validate_job(candidate, existing=existing, now=NOW)
    return str(info.value)


# ---- names --------------------------------------------------------------------------------------------------


def test_a_valid_job_is_normalised() -> None:
    stored = validate_job(
        job(concurrency="", misfire_policy="", catchup_window="", trigger_on="", retry_backoff=""),
        existing=None,
        now=NOW,
    )
    assert stored.id == "job1"
    assert stored.created_at == NOW
    assert stored.concurrency == "allow"
    assert (stored.misfire_policy, stored.catchup_window, stored.trigger_on, stored.retry_backoff) == (
        "run_once",
        "1h",
        "success",
        "5s",
    )
    assert stored.next == ZERO_TIME


def test_created_at_is_kept_from_the_existing_version() -> None:
    first = validate_job(job(), existing=None, now=NOW)
    later = validate_job(job(schedule="@every 1m"), existing=first, now=NOW + timedelta(days=3))
    assert later.created_at == NOW
    # An id sent by the client is ignored: it always equals the name.
    assert validate_job(job(id="other"), existing=None, now=NOW).id == "job1"


def test_naive_datetimes_are_taken_as_utc() -> None:
    stored = validate_job(
        job(starts_at=datetime(2026, 1, 1), expires_at=datetime(2027, 1, 1, 5)), existing=None, now=NOW
    )
    assert stored.starts_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert stored.expires_at == datetime(2027, 1, 1, 5, tzinfo=UTC)


def test_name_is_required() -> None:
    assert reason(job(name="")) == "Job validation failed: name cannot be empty."


@pytest.mark.parametrize(("name", "bad"), [("a b", " "), ("Job1", "J"), ("job.1", "."), ("job/1", "/"), ("jöb٣", "٣")])
def test_name_rejects_the_first_illegal_character(name: str, bad: str) -> None:
    assert reason(job(name=name)) == f"Job validation failed: name contains illegal character '{bad}'."


def test_name_accepts_unicode_lower_case_letters_digits_underscore_and_dash() -> None:
    assert illegal_name_character("jöb_ß-ωμέγα-42") is None
    assert validate_job(job(name="jöb_ß-ωμέγα-42"), existing=None, now=NOW).id == "jöb_ß-ωμέγα-42"


def test_name_is_at_most_200_characters() -> None:
    assert validate_job(job(name="a" * 200), existing=None, now=NOW).name == "a" * 200
    assert reason(job(name="a" * 201)) == "Job validation failed: name is longer than 200 characters."


# ---- schedule and zone ----------------------------------------------------------------------------------------


def test_timezone_must_be_an_iana_zone() -> None:
    assert validate_job(job(timezone="Europe/Berlin"), existing=None, now=NOW).timezone == "Europe/Berlin"
    assert (
        reason(job(timezone="Mars/Olympus"))
        == "Job validation failed: invalid timezone 'Mars/Olympus': unknown time zone."
    )
    assert "invalid timezone '../etc/passwd'" in reason(job(timezone="../etc/passwd"))


def test_schedule_must_parse() -> None:
    message = reason(job(schedule="61 * * * * *"))
    assert message.startswith("Job validation failed: can't parse job schedule: ")
    assert message.endswith(".")
    assert "can't parse job schedule" in reason(job(schedule="@every 500ms"))
    assert "can't parse job schedule" in reason(job(schedule="0 0 0 30 2 *"))  # never fires


def test_schedule_may_be_empty_only_for_a_child_job() -> None:
    assert "the schedule is empty" in reason(job(schedule=""))
    assert validate_job(job(schedule="", parent_job="parent"), existing=None, now=NOW).schedule == ""
    # A child may still have a schedule of its own, which must parse.
    assert "can't parse job schedule" in reason(job(schedule="nope", parent_job="parent"))


def test_a_job_cannot_be_its_own_parent() -> None:
    assert reason(job(parent_job="job1")) == "Job validation failed: the job can not have itself as parent."


# ---- policies ---------------------------------------------------------------------------------------------------


def test_concurrency_is_allow_forbid_or_replace() -> None:
    for value in ("allow", "forbid", "replace"):
        assert validate_job(job(concurrency=value), existing=None, now=NOW).concurrency == value
    assert reason(job(concurrency="never")) == (
        'Job validation failed: invalid concurrency policy value, use "allow", "forbid", "replace".'
    )


def test_misfire_policy_and_trigger_on_are_checked() -> None:
    assert reason(job(misfire_policy="sometimes")) == (
        'Job validation failed: invalid misfire_policy value, use "run_once", "run_all", "skip".'
    )
    assert reason(job(trigger_on="never")) == (
        'Job validation failed: invalid trigger_on value, use "success", "failure", "always".'
    )


@pytest.mark.parametrize("field", ["catchup_window", "retry_backoff", "timeout"])
def test_durations_are_go_durations(field: str) -> None:
    assert validate_job(job(**{field: "1h30m"}), existing=None, now=NOW)
    message = reason(job(**{field: "ten minutes"}))
    assert message.startswith(f"Job validation failed: invalid {field} 'ten minutes': ")
    assert f"invalid {field} '-5s': must be" in reason(job(**{field: "-5s"}))


def test_a_zero_catchup_window_is_allowed_but_not_a_zero_backoff() -> None:
    assert validate_job(job(catchup_window="0s"), existing=None, now=NOW).catchup_window == "0s"
    assert reason(job(retry_backoff="0s")) == "Job validation failed: invalid retry_backoff '0s': must be more than 0."


def test_retries_are_not_negative() -> None:
    assert reason(job(retries=-1)) == "Job validation failed: retries must be 0 or more."


def test_starts_at_must_be_before_expires_at() -> None:
    when = datetime(2026, 5, 1, tzinfo=UTC)
    assert reason(job(starts_at=when, expires_at=when)) == "Job validation failed: starts_at must be before expires_at."
    assert validate_job(job(starts_at=when), existing=None, now=NOW).expires_at is None


def test_processors_must_be_known() -> None:
    assert validate_job(job(processors={"log": {}, "files": {"forward": "true"}}), existing=None, now=NOW)
    assert reason(job(processors={"mail": {}})) == (
        "Job validation failed: unknown processor 'mail' (known: files, log, syslog)."
    )
    assert "settings must map strings to strings" in reason(job(processors={"log": {"x": 1}}))


def test_tag_keys_are_not_empty() -> None:
    assert reason(job(tags={" ": "x"})) == "Job validation failed: tags cannot have an empty key."


# ---- executors ------------------------------------------------------------------------------------------------


def test_executor_is_required_and_known() -> None:
    assert reason(job(executor="")) == "Job validation failed: executor cannot be empty (use shell, http or noop)."
    assert reason(job(executor="docker")) == (
        "Job validation failed: unknown executor 'docker' (known: http, noop, shell)."
    )


def test_executor_config_errors_name_the_executor_and_the_key() -> None:
    assert reason(job(executor_config={})) == (
        "Job validation failed: invalid executor_config for the shell executor: command: required."
    )


SHELL_OK = [
    {"command": "date"},
    {"command": "echo hi", "shell": "true", "timeout": "1m30s", "mem_limit": "512M", "env": "A=1,B=two"},
    {"command": "cat", "payload": "aGVsbG8=", "su": "nobody:nogroup", "timeout": "30"},
    {"command": "x", "mem_limit": "1073741824", "shell": "false", "cwd": "/tmp"},
]
SHELL_BAD = [
    ({}, "command: required"),
    ({"command": "  "}, "command: required"),
    ({"command": "x", "shell": "yes"}, "shell: 'yes' is not a boolean"),
    ({"command": "x", "timeout": "soon"}, "timeout: 'soon' is not a positive duration"),
    ({"command": "x", "timeout": "0"}, "timeout: '0' is not a positive duration"),
    ({"command": "x", "mem_limit": "lots"}, "mem_limit: 'lots' is not a positive size"),
    ({"command": "x", "mem_limit": "0M"}, "mem_limit: '0M' is not a positive size"),
    ({"command": "x", "payload": "not base64!"}, "payload: not valid base64"),
    ({"command": "x", "env": "A=1,B"}, "env: 'B' is not KEY=value"),
    ({"command": "x", "su": "a:b:c"}, "su: 'a:b:c' is not user or user:group"),
]
HTTP_OK = [
    {"method": "GET", "url": "http://example.com"},
    {"method": "post", "url": "https://example.com:8443/x?y=1", "headers": '["Content-Type: application/json"]'},
    {"method": "HEAD", "url": "http://h", "timeout": "5", "expectCode": "200, 204", "expectBody": "^ok$"},
    {"method": "OPTIONS", "url": "http://h", "tlsNoVerifyPeer": "true"},
]
HTTP_BAD = [
    ({"url": "http://h"}, "method: required"),
    ({"method": "FETCH", "url": "http://h"}, "method: 'FETCH' is not one of"),
    ({"method": "GET"}, "url: required"),
    ({"method": "GET", "url": "ftp://h/x"}, "is not an http:// or https:// URL with a host"),
    ({"method": "GET", "url": "http://"}, "is not an http:// or https:// URL with a host"),
    ({"method": "GET", "url": "http://h:99999"}, "is not a valid URL"),
    ({"method": "GET", "url": "http://h", "headers": "Content-Type: x"}, "headers: not JSON"),
    ({"method": "GET", "url": "http://h", "headers": '{"a": "b"}'}, "headers: expected a JSON array of strings"),
    ({"method": "GET", "url": "http://h", "headers": '["no colon"]'}, "headers: 'no colon' is not \"Name: value\""),
    ({"method": "GET", "url": "http://h", "timeout": "soon"}, "timeout: 'soon' is not a positive duration"),
    ({"method": "GET", "url": "http://h", "expectCode": "200,abc"}, "expectCode: 'abc' is not an HTTP status code"),
    ({"method": "GET", "url": "http://h", "expectCode": "700"}, "expectCode: '700' is not an HTTP status code"),
    ({"method": "GET", "url": "http://h", "expectBody": "("}, "expectBody: invalid regular expression '('"),
    ({"method": "GET", "url": "http://h", "tlsNoVerifyPeer": "maybe"}, "tlsNoVerifyPeer: 'maybe' is not a boolean"),
    (
        {"method": "GET", "url": "https://h", "tlsCertificateFile": "/c.pem"},
        "tlsCertificateFile and tlsCertificateKeyFile must be set together",
    ),
]


@pytest.mark.parametrize("config", SHELL_OK)
def test_shell_configs_accepted(config: dict[str, str]) -> None:
    validate_executor_config("shell", config)


@pytest.mark.parametrize(("config", "message"), SHELL_BAD)
def test_shell_configs_rejected(config: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        validate_executor_config("shell", config)


@pytest.mark.parametrize("config", HTTP_OK)
def test_http_configs_accepted(config: dict[str, str]) -> None:
    validate_executor_config("http", config)


@pytest.mark.parametrize(("config", "message"), HTTP_BAD)
def test_http_configs_rejected(config: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_executor_config("http", config)
    assert message in str(info.value)


def test_noop_accepts_anything_and_values_must_be_strings() -> None:
    validate_executor_config("noop", {"anything": "goes", "fail": "whatever"})
    with pytest.raises(ValidationError, match=r"^command: must be a string, got int"):
        validate_executor_config("shell", {"command": 1})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match=r"^unknown executor 'docker'"):
        validate_executor_config("docker", {})


# ---- parents and cycles -----------------------------------------------------------------------------------------


def _lookup(jobs: dict[str, str]) -> dict[str, Job]:
    return {name: Job(name=name, parent_job=parent) for name, parent in jobs.items()}


def test_the_parent_must_exist() -> None:
    known = _lookup({"parent": ""})
    check_parent("child", "parent", known.get)
    check_parent("child", "", known.get)
    with pytest.raises(NotFoundError, match=r"^specified parent job not found$"):
        check_parent("child", "ghost", known.get)


def test_a_parent_chain_may_not_loop_back() -> None:
    known = _lookup({"a": "", "b": "a", "c": "b"})
    assert find_cycle("a", "c", known.get) == ["a", "c", "b", "a"]
    with pytest.raises(ValidationError) as info:
        check_parent("a", "c", known.get)
    assert str(info.value) == "Job validation failed: parent_job would create a cycle: a -> c -> b -> a."
    assert find_cycle("d", "c", known.get) == []


def test_an_existing_loop_elsewhere_is_not_this_writes_cycle() -> None:
    known = _lookup({"x": "y", "y": "x"})
    assert find_cycle("new", "x", known.get) == []


def test_restore_order_puts_parents_first() -> None:
    jobs = [Job(name="grandchild", parent_job="child"), Job(name="child", parent_job="root"), Job(name="root")]
    jobs.append(Job(name="orphan", parent_job="elsewhere"))
    jobs += [Job(name="loop1", parent_job="loop2"), Job(name="loop2", parent_job="loop1")]
    ordered = [j.name for j in order_parents_first(jobs)]
    assert ordered.index("root") < ordered.index("child") < ordered.index("grandchild")
    assert ordered[-2:] == ["loop1", "loop2"]
    assert sorted(ordered) == sorted(j.name for j in jobs)
