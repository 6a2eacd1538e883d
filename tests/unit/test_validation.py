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
        "Job validation failed: unknown processor 'mail' (known: files, fluent, log, syslog)."
    )
    assert "settings must map strings to strings" in reason(job(processors={"log": {"x": 1}}))


def test_tag_keys_are_not_empty() -> None:
    assert reason(job(tags={" ": "x"})) == "Job validation failed: tags cannot have an empty key."


# ---- executors ------------------------------------------------------------------------------------------------


def test_executor_is_required_and_known() -> None:
    assert reason(job(executor="")) == "Job validation failed: executor cannot be empty (use shell, http or noop)."
    assert reason(job(executor="docker")) == (
        "Job validation failed: unknown executor 'docker' (known: grpc, http, nats, noop, rabbitmq, shell)."
    )


@pytest.mark.parametrize("executor", ["kafka", "gcppubsub"])
def test_dkron_executors_cronbus_does_not_provide_are_refused_as_such(executor: str) -> None:
    """Not "unknown": the message says cronbus does not provide it, and why (docs/executors.md)."""
    message = reason(job(executor=executor, executor_config={"topic": "t"}))
    assert message.startswith(f"Job validation failed: executor '{executor}' is not available in cronbus: ")
    assert "could not test" in message and "shell job" in message
    assert "unknown" not in message
    with pytest.raises(ValidationError, match=f"^executor '{executor}' is not available in cronbus: "):
        validate_executor_config(executor, {})


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


NATS_OK = [
    {"url": "nats://127.0.0.1:4222", "subject": "jobs.backup"},
    {"url": "tls://nats.demo.io:4443", "subject": "s", "message": "", "userName": "u", "password": "p", "debug": "x"},
    {"url": "127.0.0.1:4222, nats://user:pw@other:4222", "subject": "a.b-c.d_e"},
]
NATS_BAD = [
    ({"subject": "s"}, "url: required"),
    ({"url": "nats://h:4222"}, "subject: required"),
    ({"url": "nats://h:4222", "subject": "  "}, "subject: required"),
    ({"url": "http://h:4222", "subject": "s"}, "url: 'http://h:4222' is not a NATS server address"),
    ({"url": "nats://h:99999", "subject": "s"}, "url: 'nats://h:99999' is not a NATS server address"),
    ({"url": "nats://h:4222", "subject": "jobs.*"}, "subject: 'jobs.*' is not a subject to publish to"),
    ({"url": "nats://h:4222", "subject": "a..b"}, "subject: 'a..b' is not a subject to publish to"),
    ({"url": "nats://h:4222", "subject": "a b"}, "subject: 'a b' is not a subject to publish to"),
]
RABBITMQ_OK = [
    {"url": "amqp://guest:guest@localhost:5672/", "queue.name": "q"},
    {
        "url": "amqps://u:p@rabbit:5671/vhost",
        "exchange": "jobs",
        "queue.name": "test",
        "queue.create": "true",
        "queue.durable": "true",
        "queue.auto_delete": "false",
        "queue.exclusive": "false",
        "message.content_type": "application/json",
        "message.delivery_mode": "2",
        "message.messageId": "4373732772",
        "message.body": '{"key":"value"}',
    },
    {"url": "amqp://h/", "queue.name": "q", "message.base64Body": "aGk=", "message.body": ""},
    {"url": "amqp://h/", "queue.name": "q", "message.delivery_mode": "255"},  # Dkron takes any uint8
]
RABBITMQ_BAD = [
    ({"queue.name": "q"}, "url: required"),
    ({"url": "http://h/", "queue.name": "q"}, "url: 'http://h/' is not an amqp:// or amqps:// URL with a host"),
    ({"url": "amqp://h:70000/", "queue.name": "q"}, "url: 'amqp://h:70000/' is not an AMQP URL"),
    ({"url": "amqp://h/"}, "queue.name: required (it is also the routing key)"),
    ({"url": "amqp://h/", "queue.name": "q" * 256}, "queue.name: longer than 255 bytes"),
    (
        {"url": "amqp://h/", "queue.name": "q", "message.body": "a", "message.base64Body": "YQ=="},
        "message.body and message.base64Body: set only one of them",
    ),
    ({"url": "amqp://h/", "queue.name": "q", "message.base64Body": "not base64!"}, "message.base64Body: not valid"),
    ({"url": "amqp://h/", "queue.name": "q", "message.delivery_mode": "256"}, "message.delivery_mode: '256' is not"),
    ({"url": "amqp://h/", "queue.name": "q", "message.delivery_mode": "-1"}, "message.delivery_mode: '-1' is not"),
    ({"url": "amqp://h/", "queue.name": "q", "message.delivery_mode": "persistent"}, "message.delivery_mode: "),
    ({"url": "amqp://h/", "queue.name": "q", "queue.create": "yes"}, "queue.create: 'yes' is not a boolean"),
    ({"url": "amqp://h/", "queue.name": "q", "queue.durable": "2"}, "queue.durable: '2' is not a boolean"),
]
GRPC_OK = [
    {"url": "127.0.0.1:9000/demo.DemoService/Demo"},
    {"url": "localhost:50051/Greeter/SayHello", "body": '{"name": "x"}', "headers": '["Authorization: Bearer t"]'},
    {"url": "[::1]:9000/a.b.C.D", "timeout": "5", "expectCode": "5", "headers": '["X-Data-Bin: AAEC"]'},
    {"url": "grpc.internal:443/pkg.Svc/Call", "expectCode": "NOT_FOUND", "body": " "},
]
GRPC_BAD = [
    ({}, "url: required (host:port/package.Service/Method)"),
    ({"url": "127.0.0.1:9000"}, "url: '127.0.0.1:9000' is not host:port/package.Service/Method"),
    ({"url": "127.0.0.1/demo.S/M"}, "url: '127.0.0.1/demo.S/M' is not host:port/package.Service/Method"),
    ({"url": "h:0/demo.S/M"}, "url: 'h:0/demo.S/M' is not host:port"),
    ({"url": "h:9000/demo.S/"}, "url: 'h:9000/demo.S/' is not host:port"),
    ({"url": "h:9000/demo.S/M/x"}, "url: 'h:9000/demo.S/M/x' is not host:port"),
    ({"url": "h:9000/S/M", "body": "{name: x}"}, "body: not JSON"),
    ({"url": "h:9000/S/M", "body": "[1]"}, "body: expected a JSON object"),
    ({"url": "h:9000/S/M", "headers": "X: 1"}, "headers: not JSON"),
    ({"url": "h:9000/S/M", "headers": '["grpc-timeout: 1S"]'}, "headers: 'grpc-timeout' is reserved by gRPC"),
    ({"url": "h:9000/S/M", "headers": '["X-Bin: !!"]'}, "headers: 'X-Bin' ends in -bin, so its value must be base64"),
    ({"url": "h:9000/S/M", "timeout": "soon"}, "timeout: 'soon' is not a positive duration"),
    ({"url": "h:9000/S/M", "expectCode": "17"}, "expectCode: '17' is not a gRPC status code"),
    ({"url": "h:9000/S/M", "expectCode": "-1"}, "expectCode: '-1' is not a gRPC status code"),
]


@pytest.mark.parametrize(
    ("executor", "config"),
    [("nats", c) for c in NATS_OK] + [("rabbitmq", c) for c in RABBITMQ_OK] + [("grpc", c) for c in GRPC_OK],
)
def test_broker_configs_accepted(executor: str, config: dict[str, str]) -> None:
    validate_executor_config(executor, config)


@pytest.mark.parametrize(
    ("executor", "config", "message"),
    [("nats", *c) for c in NATS_BAD] + [("rabbitmq", *c) for c in RABBITMQ_BAD] + [("grpc", *c) for c in GRPC_BAD],
)
def test_broker_configs_rejected_naming_the_key(executor: str, config: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_executor_config(executor, config)
    assert str(info.value).startswith(message)


def test_a_broker_config_error_is_refused_when_the_job_is_written() -> None:
    config = {"url": "amqp://h/", "queue.name": "q", "message.body": "a", "message.base64Body": "YQ=="}
    assert reason(job(executor="rabbitmq", executor_config=config)) == (
        "Job validation failed: invalid executor_config for the rabbitmq executor: "
        "message.body and message.base64Body: set only one of them."
    )


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
