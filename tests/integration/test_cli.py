"""The `cronbus` client commands against a real gateway, scheduler and executor: output, exit codes, tail, kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from cronbus.common.consul.agent import free_port
from cronbus.services.cli import main
from tests.helpers import Cluster, wait_until

TOKEN = "s3cret-token-for-the-cli-tests"


def cli(url: str, *args: str, input: str | None = None, env: Mapping[str, str] | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(main, list(args), input=input, env={"CRONBUS_GATEWAY": url, **(env or {})})


def ok(url: str, *args: str, input: str | None = None) -> Result:
    result = cli(url, *args, input=input)
    assert result.exit_code == 0, f"cronbus {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result


def as_json(url: str, *args: str) -> Any:
    return json.loads(ok(url, *args, "--json").stdout)


def up(cluster: Cluster, *gateway_args: str, executor: bool = False) -> str:
    """A scheduler (the leader), optionally an executor, and a gateway; returns the gateway URL once it serves."""
    cluster.scheduler(name="s1")
    if executor:
        cluster.executor(name="e1")
    _, url = cluster.gateway(*gateway_args, name="g1")
    env = {"CRONBUS_TOKEN": TOKEN} if gateway_args else {}
    wait_until(lambda: cli(url, "leader", env=env).exit_code == 0, timeout_s=30, what="the gateway and a leader")
    if executor:

        def executor_listed() -> bool:
            members = json.loads(cli(url, "members", "--json", env=env).stdout)
            return any(m["Tags"].get("role") == "executor" and m["Status"] == 1 for m in members)

        wait_until(executor_listed, timeout_s=20, what="the executor among the members")
    return url


def run_now(url: str, job: str) -> Result:
    """`cronbus jobs run`. Right after start-up the leader may know the executor (its hello) before it sees its
    subscription, and refuses with 503 (nothing launched): asked again until it takes the run."""
    answers: list[Result] = []

    def taken() -> bool:
        answers.append(cli(url, "jobs", "run", job))
        return not (answers[-1].exit_code == 1 and answers[-1].stderr.startswith("error: 503 "))

    wait_until(taken, timeout_s=10, interval_s=0.2, what=f"the leader to take a run of {job}")
    assert answers[-1].exit_code == 0, f"cronbus jobs run {job} -> {answers[-1].exit_code}\n{answers[-1].output}"
    return answers[-1]


def executions_of(url: str, job: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = as_json(url, "executions", "list", job)
    return result


def one_finished(url: str, job: str) -> dict[str, Any]:
    def finished() -> dict[str, Any]:
        done = [e for e in executions_of(url, job) if e["status"] not in ("pending", "running")]
        return done[0] if done else {}

    return wait_until(finished, timeout_s=20, what=f"a finished execution of {job}")


def complete(url: str, words: str) -> list[str]:
    """What bash completion would offer for the last of `words` (click's bash_complete protocol)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {"_CRONBUS_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = CliRunner().invoke(main, [], env={"CRONBUS_GATEWAY": url, **env}, prog_name="cronbus")
    assert result.exit_code == 0, result.output
    items = (line.partition(",") for line in result.stdout.splitlines() if line)
    return [value for kind, _, value in items if kind == "plain"]


# ---- without a gateway ---------------------------------------------------------------------------------------


def test_no_gateway_is_exit_code_3_and_a_bad_url_a_usage_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli(url, "jobs", "list")
    assert result.exit_code == 3
    assert f"cannot reach the gateway at {url}" in result.stderr
    assert "is `cronbus gateway` running?" in result.stderr
    assert result.stdout == ""
    bad = cli(url, "jobs", "list", "--gateway", "127.0.0.1:8080")
    assert bad.exit_code == 2
    assert "invalid gateway URL" in bad.stderr
    assert complete(url, "cronbus jobs show ") == [], "completion without a gateway stays silent"


def test_import_crontab_dry_run_needs_no_gateway(tmp_path: Path) -> None:
    crontab = tmp_path / "crontab"
    crontab.write_text("CRON_TZ=Europe/Berlin\nPATH=/usr/bin:/bin\n15 4 * * * /opt/backup.sh%full\n")
    url = f"http://127.0.0.1:{free_port()}"
    result = ok(url, "import-crontab", str(crontab), "--dry-run", "--prefix", "host1", "--tag", "role=db")
    assert json.loads(result.stdout) == [
        {
            "name": "host1-opt-backup-sh",
            "timezone": "Europe/Berlin",
            "schedule": "15 4 * * *",
            "tags": {"role": "db"},
            "executor": "shell",
            "executor_config": {"command": "/opt/backup.sh", "shell": "true", "env": "PATH=/usr/bin:/bin",
                                "payload": "ZnVsbAo="},
        }
    ]  # fmt: skip
    crontab.write_text("# header\n* * * * * ok\n99 * * * * bad\n")
    bad = cli(url, "import-crontab", str(crontab), "--dry-run")
    assert bad.exit_code == 1
    assert bad.stderr.startswith(f"error: {crontab}: line 3: ")


# ---- jobs ----------------------------------------------------------------------------------------------------


def test_jobs_create_list_show_edit_toggle_delete(cluster: Cluster, tmp_path: Path) -> None:
    url = up(cluster)
    created = ok(url, "jobs", "create", "--name", "backup", "--schedule", "0 3 * * *", "--command", "echo dump",
                 "--timezone", "Europe/Berlin", "--tag", "role=db", "--metadata", "team=data", "--retries", "2",
                 "--config", "timeout=30s")  # fmt: skip
    assert "saved job backup" in created.stdout
    job = as_json(url, "jobs", "show", "backup")
    assert job["schedule"] == "0 3 * * *" and job["timezone"] == "Europe/Berlin" and job["retries"] == 2
    assert job["tags"] == {"role": "db"} and job["metadata"] == {"team": "data"}
    assert job["executor"] == "shell"
    assert job["executor_config"] == {"command": "echo dump", "shell": "true", "timeout": "30s"}
    ok(url, "jobs", "create", "--name", "report", "--schedule", "@every 1h", "--executor", "noop", "--disabled")

    table = ok(url, "jobs", "list").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "SCHEDULE",
        "TZ",
        "STATUS",
        "NEXT",
        "LAST",
        "SUCCESS",
        "LAST",
        "ERROR",
        "DISABLED",
    ]
    assert [line.split()[0] for line in table[1:]] == ["backup", "report"]
    assert "Europe/Berlin" in table[1] and "never run" in table[1]
    assert table[2].rstrip().endswith("yes")
    assert [j["name"] for j in as_json(url, "jobs", "list", "--disabled")] == ["report"]
    assert [j["name"] for j in as_json(url, "jobs", "list", "--enabled")] == ["backup"]
    assert [j["name"] for j in as_json(url, "jobs", "list", "--metadata", "team=data")] == ["backup"]
    assert [j["name"] for j in as_json(url, "jobs", "list", "--q", "epo")] == ["report"]
    assert [j["name"] for j in as_json(url, "jobs", "list", "--status", "untriggered", "--desc")] == [
        "report",
        "backup",
    ]
    limited = ok(url, "jobs", "list", "--sort", "schedule", "--limit", "1").stdout
    assert limited.splitlines()[1].startswith("backup") and "(1 of 2 jobs shown)" in limited
    shown = ok(url, "jobs", "show", "backup").stdout
    assert "schedule:" in shown and "0 3 * * *" in shown and "  command:" in shown and "echo dump" in shown

    ok(url, "jobs", "edit", "backup", "--schedule", "30 4 * * *", "--tag", "role-", "--tag", "dc=dc1",
       "--metadata", "tier=1", "--config", "timeout-", "--command", "echo new")  # fmt: skip
    edited = as_json(url, "jobs", "show", "backup")
    assert edited["schedule"] == "30 4 * * *" and edited["timezone"] == "Europe/Berlin" and edited["retries"] == 2
    assert edited["tags"] == {"dc": "dc1"} and edited["metadata"] == {"team": "data", "tier": "1"}
    assert edited["executor_config"] == {"command": "echo new", "shell": "true"}
    yaml_file = tmp_path / "backup.yaml"
    yaml_file.write_text("schedule: '@daily'\nexecutor: shell\nexecutor_config:\n  command: date\n  shell: true\n")
    ok(url, "jobs", "edit", "backup", "--file", str(yaml_file))
    replaced = as_json(url, "jobs", "show", "backup")
    assert replaced["schedule"] == "@daily" and replaced["executor_config"] == {"command": "date", "shell": "true"}
    assert replaced["timezone"] == "" and replaced["tags"] is None, "--file replaces the whole definition"
    yaml_file.write_text("name: other\nschedule: '@daily'\n")
    assert cli(url, "jobs", "edit", "backup", "--file", str(yaml_file)).exit_code == 2
    assert cli(url, "jobs", "edit", "backup").exit_code == 2

    assert "job report is now enabled" in ok(url, "jobs", "toggle", "report").stdout
    assert as_json(url, "jobs", "show", "report")["disabled"] is False

    refused = cli(url, "jobs", "delete", "report", input="n\n")
    assert refused.exit_code == 1 and as_json(url, "jobs", "show", "report")["name"] == "report"
    assert "deleted job report" in ok(url, "jobs", "delete", "report", "--yes").stdout
    missing = cli(url, "jobs", "show", "report")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: 404 ") and "not found" in missing.stderr


def test_jobs_from_files_errors_and_usage(cluster: Cluster, tmp_path: Path) -> None:
    url = up(cluster)
    # A child listed before its parent: the command writes parents first.
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(
        "- name: child\n  parent_job: parent\n  executor: noop\n"
        "- name: parent\n  schedule: '@hourly'\n  executor: shell\n  executor_config: {command: date, timeout: 30}\n"
    )
    saved = ok(url, "jobs", "create", str(jobs_file), "--json")
    assert [j["name"] for j in json.loads(saved.stdout)] == ["parent", "child"]
    assert as_json(url, "jobs", "show", "parent")["dependent_jobs"] == ["child"]
    assert as_json(url, "jobs", "show", "parent")["executor_config"]["timeout"] == "30"
    from_stdin = ok(url, "jobs", "create", "-", input='{"name": "piped", "schedule": "@manually", "executor": "noop"}')
    assert "saved job piped" in from_stdin.stdout

    conflict = cli(url, "jobs", "delete", "parent", "--yes")
    assert conflict.exit_code == 1 and conflict.stderr.startswith("error: 409 ")
    invalid = cli(url, "jobs", "create", "--name", "Bad Name", "--schedule", "@daily", "--command", "x")
    assert invalid.exit_code == 1
    assert invalid.stderr.strip() == "error: 400 Job validation failed: name contains illegal character 'B'."
    bad_schedule = cli(url, "jobs", "create", "--name", "x", "--schedule", "61 * * * *", "--command", "x")
    assert bad_schedule.exit_code == 1 and bad_schedule.stderr.startswith("error: 400 ")

    assert cli(url, "jobs", "create", "--schedule", "@daily").exit_code == 2  # no --name
    assert cli(url, "jobs", "create", "--name", "x").exit_code == 2  # no --schedule
    assert cli(url, "jobs", "create", str(jobs_file), "--name", "x").exit_code == 2
    assert cli(url, "jobs", "create", "--name", "x", "--schedule", "@daily", "--tag", "novalue").exit_code == 2
    assert cli(url, "jobs", "list", "--status", "bogus").exit_code == 2
    not_yaml = tmp_path / "bad.json"
    not_yaml.write_text("[1, 2]")
    refused = cli(url, "jobs", "create", str(not_yaml))
    assert refused.exit_code == 1 and "expected a job object" in refused.stderr

    assert complete(url, "cronbus jobs show pa") == ["parent"]
    assert sorted(complete(url, "cronbus jobs run ")) == ["child", "parent", "piped"]


def test_backup_restore_preview_import_pause_and_cluster(cluster: Cluster, tmp_path: Path) -> None:
    url = up(cluster)
    ok(url, "jobs", "create", "--name", "a", "--schedule", "@daily", "--command", "echo a")
    ok(url, "jobs", "create", "--name", "b", "--parent-job", "a", "--command", "echo b")
    dump = tmp_path / "jobs.json"
    assert "saved 2 jobs" in ok(url, "backup", str(dump)).stderr
    assert [j["name"] for j in json.loads(dump.read_text())] == ["a", "b"]
    ok(url, "jobs", "delete", "b", "--yes")
    ok(url, "jobs", "delete", "a", "--yes")
    restored = ok(url, "restore", str(dump))
    assert restored.stdout.splitlines() == ["success create a", "success create b"]
    assert as_json(url, "jobs", "show", "b")["parent_job"] == "a"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"name": "fine", "schedule": "@daily", "executor": "noop"},
                                  {"name": "Nope!", "schedule": "@daily", "executor": "noop"}]))  # fmt: skip
    partial = cli(url, "restore", str(broken))
    assert partial.exit_code == 1
    assert partial.stdout.splitlines()[0] == "success create fine" or "success create fine" in partial.stdout
    assert any(line.startswith("fail create Nope!") for line in partial.stdout.splitlines())

    preview = ok(url, "schedule", "preview", "0 30 9 * * *", "--tz", "Asia/Tokyo", "--count", "3").stdout.splitlines()
    assert preview[0].split() == ["#", "UTC", "Asia/Tokyo"]
    assert len(preview) == 4
    assert all(" 00:30:00Z " in row and "09:30:00 JST" in row for row in preview[1:])
    fires = as_json(url, "schedule", "preview", "CRON_TZ=Asia/Tokyo 30 9 * * *", "--count", "2")
    assert len(fires) == 2 and all(f.endswith(("T00:30:00Z", "T00:30:00.000000Z")) for f in fires)
    bad = cli(url, "schedule", "preview", "not a schedule")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: 400 ")

    crontab = tmp_path / "crontab"
    crontab.write_text("MAILTO=ops@example.com\n*/5 * * * * /usr/bin/check --quick\n@weekly date\n")
    imported = ok(url, "import-crontab", str(crontab), "--prefix", "web1", "--tag", "role=web")
    assert "line 2: saved job web1-usr-bin-check-quick" in imported.stdout
    assert "line 3: saved job web1-date" in imported.stdout
    check = as_json(url, "jobs", "show", "web1-usr-bin-check-quick")
    assert check["schedule"] == "*/5 * * * *" and check["tags"] == {"role": "web"}
    assert check["owner_email"] == "ops@example.com"
    ok(url, "import-crontab", str(crontab), "--prefix", "web1", "--tag", "role=web")
    assert len(as_json(url, "jobs", "list", "--q", "web1-")) == 2, "a second import updates the same jobs"

    assert "paused" in ok(url, "pause").stdout
    assert as_json(url, "pause", "--status")["paused"] is True
    refused = cli(url, "jobs", "create", "--name", "late", "--schedule", "@daily", "--command", "x")
    assert refused.exit_code == 1 and refused.stderr.startswith("error: 503 ")
    assert "accepted" in ok(url, "unpause").stdout
    ok(url, "jobs", "create", "--name", "late", "--schedule", "@daily", "--command", "x")

    members = ok(url, "members").stdout.splitlines()
    assert members[0].split()[:3] == ["NAME", "ROLE", "ADDRESS"]
    rows = {line.split()[1]: line.split() for line in members[1:]}
    assert set(rows) == {"scheduler", "gateway"}
    assert rows["scheduler"][0].endswith("s1") and rows["scheduler"][3:5] == ["alive", "yes"]
    leader = as_json(url, "leader")
    assert leader["Name"] == rows["scheduler"][0] and leader["Tags"]["leader"] == "true"
    assert f"Name: {leader['Name']}" in " ".join(ok(url, "leader").stdout.split())


# ---- runs ----------------------------------------------------------------------------------------------------


def test_run_executions_tail_kill_and_busy(cluster: Cluster, tmp_path: Path) -> None:
    url = up(cluster, executor=True)
    ok(url, "jobs", "create", "--name", "hello", "--schedule", "@manually", "--command", "echo one; echo two")
    assert "run of job hello requested" in run_now(url, "hello").stdout
    done = one_finished(url, "hello")
    assert done["status"] == "success" and done["node_name"] == "e1"
    table = ok(url, "executions", "list", "hello").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "STATUS", "ATTEMPT", "NODE"]
    assert table[1].split()[:4] == [done["id"], "success", "1", "e1"]
    shown = ok(url, "executions", "show", "hello", done["id"]).stdout
    assert "output:\none\ntwo\n" in shown
    replay = ok(url, "executions", "tail", "hello", done["id"])
    assert replay.stdout == "one\ntwo\n"
    assert "ended: success, exit code 0" in replay.stderr
    assert complete(url, f"cronbus executions show hello {done['id'][:6]}") == [done["id"]]

    created = ok(
        url, "jobs", "create", "--name", "sad", "--schedule", "@manually", "--command", "echo bad; exit 3", "--run"
    )
    assert "run started" in created.stdout
    failed = one_finished(url, "sad")
    tail = cli(url, "executions", "tail", "sad", failed["id"])
    assert tail.exit_code == 1 and tail.stdout == "bad\n" and "ended: failed, exit code 3" in tail.stderr
    events = [
        json.loads(line) for line in ok(url, "executions", "tail", "hello", done["id"], "--json").stdout.splitlines()
    ]
    assert events[-1] == {"event": "end", "data": {"status": "success", "exit_code": 0}}

    # Live: the tail prints "start" while the run waits for the test's flag file, then "done" and exits 0.
    flag = tmp_path / "flag"
    ok(url, "jobs", "create", "--name", "live", "--schedule", "@manually",
       "--command", f"echo start; while [ ! -e {flag} ]; do sleep 0.05; done; echo done")  # fmt: skip
    run_now(url, "live")
    running = wait_until(lambda: executions_of(url, "live"), timeout_s=20, what="an execution of live")[0]
    busy = wait_until(lambda: as_json(url, "busy"), timeout_s=20, what="live among the busy executions")
    assert [e["id"] for e in busy] == [running["id"]]
    assert running["id"] in ok(url, "busy").stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "cronbus.services", "executions", "tail", "live", running["id"], "--gateway", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout = proc.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: "start\n" in lines, timeout_s=20, what="live output before the run ends")
        assert "done\n" not in lines
        flag.touch()
        assert proc.wait(timeout=30) == 0
        reader.join(timeout=10)
        assert lines == ["start\n", "done\n"]
        assert "ended: success" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        stdout.close()
        proc.stderr.close()

    ok(url, "jobs", "create", "--name", "sleepy", "--schedule", "@manually", "--command", "sleep 300")
    run_now(url, "sleepy")

    def sleepy_running() -> str:
        return next(
            (e["id"] for e in as_json(url, "busy") if e["job_name"] == "sleepy" and e["status"] == "running"), ""
        )

    victim = wait_until(sleepy_running, timeout_s=20, what="sleepy running")
    assert "kill of execution" in ok(url, "executions", "kill", "sleepy", victim).stdout
    killed = one_finished(url, "sleepy")
    assert killed["id"] == victim and killed["status"] == "killed"
    assert cli(url, "executions", "tail", "sleepy", victim).exit_code == 1
    again = cli(url, "executions", "kill", "sleepy", victim)
    assert again.exit_code == 1 and again.stderr.startswith("error: 409 ")
    missing = cli(url, "executions", "show", "sleepy", "no-such-id")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: 404 ")


def test_tokens_are_sent_as_bearer(cluster: Cluster) -> None:
    url = up(cluster, "--token", f"{TOKEN}:admin")
    refused = cli(url, "jobs", "list")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: 401 ") and "--token or CRONBUS_TOKEN" in refused.stderr
    assert cli(url, "jobs", "list", "--token", TOKEN).exit_code == 0
    assert cli(url, "jobs", "list", env={"CRONBUS_TOKEN": TOKEN}).exit_code == 0
    wrong = cli(url, "jobs", "list", "--token", "x" * 20)
    assert wrong.exit_code == 1 and wrong.stderr.startswith("error: 401 ")


def test_executions_search_finds_failed_runs_across_jobs(cluster: Cluster) -> None:
    url = up(cluster, executor=True)
    ok(
        url,
        "jobs",
        "create",
        "--name",
        "backup",
        "--schedule",
        "@manually",
        "--command",
        "echo ERROR: disk full; exit 3",
    )
    ok(url, "jobs", "create", "--name", "report", "--schedule", "@manually", "--command", "echo 1200 rows")
    for name in ("backup", "report"):
        run_now(url, name)
        one_finished(url, name)
    table = ok(url, "executions", "search", "--status", "failures", "--since", "1h").stdout.splitlines()
    assert table[0].split()[:3] == ["JOB", "ID", "STATUS"] and table[0].endswith("LAST LINE")
    assert len(table) == 2 and table[1].split()[:1] == ["backup"] and table[1].endswith("ERROR: disk full")
    found = as_json(url, "executions", "search", "--grep", "rows", "--node", "e1")
    assert [e["job_name"] for e in found] == ["report"]
    assert as_json(url, "executions", "search", "--since", "2000-01-01T00:00:00Z", "--until", "1h") == []
    nothing = cli(url, "executions", "search", "--job", "report", "--status", "failed")
    assert (nothing.exit_code, nothing.stderr.strip()) == (0, "no execution matches")
    bad = cli(url, "executions", "search", "--status", "exploded")
    assert bad.exit_code == 1 and "status must be among pending, running" in bad.stderr
