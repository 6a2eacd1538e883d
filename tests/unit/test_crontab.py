"""Crontab to jobs: schedules, settings lines, '%' as cron reads it, stable names, system format, bad lines."""

from __future__ import annotations

import base64
import shlex

import pytest

from cronbus.common.errors import ValidationError
from cronbus.common.models import Job
from cronbus.common.validation import MAX_NAME_CHARS, validate_name
from cronbus.services.gateway.client.api import compact_job
from cronbus.services.gateway.client.crontab import CrontabError, parse_crontab, split_percent


def jobs_of(text: str, **kwargs: object) -> list[Job]:
    return [entry.job for entry in parse_crontab(text, **kwargs)]  # type: ignore[arg-type]


def config(job: Job) -> dict[str, str]:
    assert job.executor_config is not None
    return job.executor_config


def test_five_field_lines_and_descriptors_become_shell_jobs() -> None:
    text = "# nightly\n\n30 2 * * 1-5  /usr/local/bin/backup.sh --full\n@hourly   date\n   @DAILY echo  two  spaces\n"
    entries = parse_crontab(text)
    assert [e.line for e in entries] == [3, 4, 5]
    backup, hourly, daily = (e.job for e in entries)
    assert backup.schedule == "30 2 * * 1-5"
    assert backup.executor == "shell"
    assert config(backup) == {"command": "/usr/local/bin/backup.sh --full", "shell": "true"}
    assert backup.timezone == ""  # UTC, as a job without a zone
    assert hourly.schedule == "@hourly"
    assert config(hourly)["command"] == "date"
    assert daily.schedule == "@DAILY"
    assert config(daily)["command"] == "echo  two  spaces"  # the command's own spacing is kept


def test_names_are_slugs_of_the_command_stable_unique_and_valid() -> None:
    text = "* * * * * /usr/bin/PHP  /var/www/Cron.php\n0 * * * * /usr/bin/php /var/www/cron.php\n5 * * * * !!!\n"
    first = [j.name for j in jobs_of(text)]
    assert first == ["usr-bin-php-var-www-cron-php", "usr-bin-php-var-www-cron-php-2", "cron-3"]
    assert [j.name for j in jobs_of(text)] == first, "importing again must give the same names"
    prefixed = [j.name for j in jobs_of(text, prefix="web01")]
    assert prefixed == ["web01-usr-bin-php-var-www-cron-php", "web01-usr-bin-php-var-www-cron-php-2", "web01-3"]
    for name in first + prefixed:
        validate_name(name)


def test_long_commands_give_names_within_the_limit() -> None:
    command = "echo " + "x" * 400
    names = [j.name for j in jobs_of(f"* * * * * {command}\n0 * * * * {command}\n", prefix="p")]
    assert all(len(n) <= MAX_NAME_CHARS for n in names)
    assert names[0] != names[1]
    assert names[1].endswith("-2")
    for name in names:
        validate_name(name)


@pytest.mark.parametrize("prefix", ["Web", "a b", "é", "x" * 150])
def test_a_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="prefix"):
        parse_crontab("* * * * * date\n", prefix=prefix)


def test_cron_tz_and_tz_set_the_zone_of_the_lines_below() -> None:
    text = "0 1 * * * a\nCRON_TZ=Europe/Berlin\n0 2 * * * b\nTZ = 'America/New_York'\n0 3 * * * c\n"
    a, b, c = jobs_of(text)
    assert (a.timezone, b.timezone, c.timezone) == ("", "Europe/Berlin", "America/New_York")
    assert "env" not in config(b), "CRON_TZ is cron's, not the command's"
    assert config(c)["env"] == "TZ=America/New_York", "cron also hands TZ to the command"


def test_environment_lines_go_into_env_of_the_jobs_below() -> None:
    text = 'PATH=/usr/bin:/bin\n* * * * * a\nGREETING = "hello world"\nEMPTY=\n* * * * * b\n'
    a, b = jobs_of(text)
    assert config(a)["env"] == "PATH=/usr/bin:/bin"
    assert config(b)["env"] == "PATH=/usr/bin:/bin,GREETING=hello world,EMPTY="


def test_a_value_with_a_comma_cannot_be_carried_in_env() -> None:
    with pytest.raises(CrontabError, match=r"line 2: the value of LIST holds ','"):
        parse_crontab("* * * * * a\nLIST=a,b\n")


def test_shell_sets_how_the_command_runs() -> None:
    text = "* * * * * echo $((1+1)) | cat\nSHELL=/bin/bash\n* * * * * echo {a,b}\nSHELL=/bin/sh\n* * * * * x\n"
    sh, bash, back = jobs_of(text)
    assert config(sh) == {"command": "echo $((1+1)) | cat", "shell": "true"}
    assert config(bash)["shell"] == "false"
    assert shlex.split(config(bash)["command"]) == ["/bin/bash", "-c", "echo {a,b}"]
    assert config(back)["shell"] == "true"


def test_mailto_becomes_the_owner_email() -> None:
    (job,) = jobs_of("MAILTO=ops@example.com\n@weekly report\n")
    assert job.owner_email == "ops@example.com"
    assert "env" not in config(job)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("date", ("date", None)),
        ("mail -s hi root%line one%line two", ("mail -s hi root", "line one\nline two\n")),
        (r"date +\%Y-\%m-\%d", ("date +%Y-%m-%d", None)),
        (r"printf '\n' %a\%b%", ("printf '\\n' ", "a%b\n")),
        ("cat%", ("cat", "")),
        (r"cat%x\y", ("cat", "x\\y\n")),
        (r"echo \\%in", ("echo \\\\", "in\n")),
        ("cat%ends with newline%", ("cat", "ends with newline\n")),
    ],
)
def test_percent_splits_stdin_from_the_command_as_cron_does(command: str, expected: tuple[str, str | None]) -> None:
    assert split_percent(command) == expected


def test_stdin_after_percent_becomes_the_base64_payload() -> None:
    (job,) = jobs_of("0 9 * * * mail -s report root%Dear root,%all good\n")
    assert config(job)["command"] == "mail -s report root"
    assert base64.b64decode(config(job)["payload"]).decode() == "Dear root,\nall good\n"
    (plain,) = jobs_of("0 9 * * * date +\\%s\n")
    assert "payload" not in config(plain)
    assert config(plain)["command"] == "date +%s"


def test_system_crontab_has_a_user_column_that_becomes_su() -> None:
    text = "SHELL=/bin/sh\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n@daily www-data php x.php\n"
    hourly, daily = jobs_of(text, system=True)
    assert config(hourly) == {"command": "cd / && run-parts --report /etc/cron.hourly", "shell": "true", "su": "root"}
    assert hourly.name == "cd-run-parts-report-etc-cron-hourly"
    assert config(daily)["su"] == "www-data"
    assert config(daily)["command"] == "php x.php"


def test_tags_are_set_on_every_job() -> None:
    jobs = jobs_of("* * * * * a\n* * * * * b\n", tags={"role": "web"})
    assert [j.tags for j in jobs] == [{"role": "web"}, {"role": "web"}]
    assert all(j.tags is None for j in jobs_of("* * * * * a\n"))


def test_the_leading_dash_of_cronie_is_ignored() -> None:
    (job,) = jobs_of("-*/5 * * * * quiet\n")
    assert job.schedule == "*/5 * * * *"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# ok\n* * * * *\n", r"line 2: expected 5 time fields and a command"),
        ("* * * *\n", r"line 1: expected 5 time fields and a command"),
        ("\n\n@daily\n", r"line 3: expected a descriptor and a command"),
        ("61 * * * * date\n", r"line 1: .*61"),
        ("* * * * * date\n0 0 30 2 * never\n", r"line 2: .*never"),
        ("@reboot /start.sh\n", r"line 1: @reboot is not supported"),
        ("@fortnightly x\n", r"line 1: .*@fortnightly"),
        ("CRON_TZ=Mars/Olympus\n* * * * * x\n", r"line 1: unknown time zone 'Mars/Olympus'"),
        ("TZ=Nowhere/Land\n", r"line 1: unknown time zone"),
        ("* * * * * %stdin only\n", r"line 1: the command is empty"),
        ("SHELL=\n", r"line 1: SHELL is empty"),
    ],
)
def test_bad_lines_are_refused_with_their_line_number(text: str, message: str) -> None:
    with pytest.raises(CrontabError, match=message) as caught:
        parse_crontab(text)
    assert str(caught.value).startswith(f"line {caught.value.line}: ")


def test_system_lines_need_a_user_and_a_command() -> None:
    with pytest.raises(CrontabError, match=r"line 1: expected 5 time fields, a user and a command"):
        parse_crontab("* * * * * root\n", system=True)


def test_an_empty_crontab_gives_no_jobs() -> None:
    assert parse_crontab("# nothing here\n\nMAILTO=\n") == []


def test_compact_json_leaves_out_defaults_and_read_only_fields() -> None:
    (job,) = jobs_of("CRON_TZ=Asia/Tokyo\n0 6 * * * date\n")
    assert compact_job(job) == {
        "name": "date",
        "timezone": "Asia/Tokyo",
        "schedule": "0 6 * * *",
        "executor": "shell",
        "executor_config": {"command": "date", "shell": "true"},
    }
