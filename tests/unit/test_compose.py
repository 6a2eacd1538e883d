"""Deployment files match the code: compose.yaml, the Dockerfile and the systemd units use real flags and variables;
docs/metrics.md and the Grafana dashboard name real metrics."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from cronbus.services.cli import main
from cronbus.services.gateway.cli import is_loopback, parse_tokens, refuse_unsafe_exposure

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
SERVICES = ("scheduler", "executor", "gateway")
TEST_ENV = {"CRONBUS_ADMIN_TOKEN": "a-test-admin-token-of-32-chars-x"}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[?-]([^}]*))?\}")


def interpolate(text: str) -> str:
    """Docker Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, with TEST_ENV as the environment."""

    def value(match: re.Match[str]) -> str:
        name, default = match[1], match[2] or ""
        if name in TEST_ENV:
            return TEST_ENV[name]
        if "?" in match[0]:
            raise AssertionError(f"compose requires ${name}: {default}")
        return default

    return _INTERPOLATION.sub(value, text)


def parse(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> click.Context:
    """Parses a cronbus command line as the real `cronbus` would, without running it: an unknown flag, a bad
    value or a bad CRONBUS_* variable fails the test."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("CRONBUS_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        group = main.make_context("cronbus", list(args), resilient_parsing=False)
        name = next(a for a in args if not a.startswith("-"))
        command = main.get_command(group, name)
        assert command is not None, f"no cronbus command {name!r}"
        return command.make_context(name, args[args.index(name) + 1 :], parent=group, resilient_parsing=False)


def envvars(command: click.Command) -> set[str]:
    """Every CRONBUS_* variable a command reads (its options' and the group's)."""
    names = {"CRONBUS_CONFIG"}
    for param in [*command.params, *main.params]:
        envvar = getattr(param, "envvar", None)
        names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


def all_envvars() -> set[str]:
    commands = [main.commands[name] for name in SERVICES]
    return set().union(*(envvars(c) for c in commands))


def test_envvars_sees_the_option_variables() -> None:
    assert {"CRONBUS_CONSUL", "CRONBUS_TAGS", "CRONBUS_PROCESSOR_DIR"} <= envvars(main.commands["executor"])
    assert "CRONBUS_TAGS" not in envvars(main.commands["gateway"])


# ---- compose.yaml ---------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(interpolate((ROOT / "compose.yaml").read_text()))
    assert isinstance(data, dict)
    return data


def cronbus_services() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose()["services"].items():
        if service.get("image", "").startswith("cronbus"):
            yield name, service


def test_compose_has_the_documented_topology() -> None:
    services = compose()["services"]
    kinds = [s["command"][0] for _, s in cronbus_services()]
    assert sorted(kinds) == ["executor", "executor", "executor", "gateway", "scheduler", "scheduler"]
    assert services["consul"]["image"].startswith("hashicorp/consul")
    executor_tags = [
        tuple(s["command"][i + 1] for i, a in enumerate(s["command"]) if a == "--tag")
        for _, s in cronbus_services()
        if s["command"][0] == "executor"
    ]
    assert len(set(executor_tags)) == 3 and all(executor_tags), "three executors with different tags"
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        if name != "consul":
            assert service["depends_on"]["consul"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", [n for n, _ in cronbus_services()])
def test_compose_commands_parse_with_the_real_cli(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = dict(compose()["services"])[name]
    command = service["command"]
    assert isinstance(command, list), f"{name}: a list, so no shell splitting is involved"
    assert command[0] in SERVICES, f"{name}: the image's ENTRYPOINT is cronbus; start with the subcommand"
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    unknown = {k for k in env if k.startswith("CRONBUS_")} - envvars(main.commands[command[0]])
    assert not unknown, f"{name}: variables no option reads: {unknown}"
    ctx = parse([str(a) for a in command], env, monkeypatch)
    assert ctx.params["node_name"] == name, f"{name}: node name should match the service name"
    assert ctx.params["consul_addr"] == "consul:8500"
    if command[0] == "scheduler":
        assert ctx.params["advertise_host"] == name  # what the others resolve on the compose network
        assert ctx.params["metrics_port"] == 9100
    if command[0] == "executor":
        assert ctx.params["metrics_bind"] == "0.0.0.0" and ctx.params["metrics_port"] == 9100
        assert ctx.params["data_dir"] in [v.split(":")[1] for v in service["volumes"]], "results survive restarts"
    if command[0] == "gateway":
        # The gateway refuses a public address without tokens, or with tokens over plain HTTP, unless --insecure;
        # the check runs in its body, so repeat it here.
        tokens = parse_tokens(ctx.params["tokens"])
        assert tokens and not is_loopback(ctx.params["host"])
        tls = bool(ctx.params["tls_cert"])
        refuse_unsafe_exposure(ctx.params["host"], tokens=bool(tokens), tls=tls, insecure=ctx.params["insecure"])
        # Plain HTTP with tokens is published on the host's loopback only.
        published = f"{ctx.params['port']}:{ctx.params['port']}"
        assert (f"{published}" if tls else f"127.0.0.1:{published}") in service["ports"]


def test_an_unknown_flag_fails_the_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(click.NoSuchOption):
        parse(["executor", "--tags", "role=web"], {}, monkeypatch)
    with pytest.raises(click.BadParameter):
        parse(["executor"], {"CRONBUS_LOG_FORMAT": "yaml"}, monkeypatch)


# ---- Dockerfile -----------------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, argument) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_builds_a_non_root_cronbus_image(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    instructions = [i for i, _ in steps]
    runs = [arg for i, arg in steps if i == "RUN"]
    # Every version from the lock, hashes checked; the project itself adds nothing unpinned.
    assert any("pip install --require-hashes --no-deps -r requirements/runtime.txt" in run for run in runs)
    assert any("pip install --no-deps --no-build-isolation ." in run for run in runs)
    assert not [run for run in runs if "pip install" in run and "--no-deps" not in run]
    copied = [arg.split()[0] for i, arg in steps if i == "COPY"]
    assert "requirements/runtime.txt" in copied and (ROOT / "requirements/runtime.txt").is_file()
    users = [arg for i, arg in steps if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert instructions.index("USER") > max(i for i, (kind, _) in enumerate(steps) if kind == "RUN")
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])  # exec form: signals reach cronbus, not a shell
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["cronbus"] and "cronbus" in scripts
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd == ["--help"], "no service by default: compose.yaml and docker run name it"
    with pytest.raises(click.exceptions.Exit) as done:  # prints the usage, exits 0
        parse(cmd, {}, monkeypatch)
    assert done.value.exit_code == 0


def test_compose_builds_the_image_the_dockerfile_describes() -> None:
    for name, service in cronbus_services():
        assert service["image"] == "cronbus:latest", name
    assert compose()["x-cronbus"]["build"] == "."


# ---- systemd ------------------------------------------------------------------------------------------------


def unit(name: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (a key may repeat)."""
    values: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize("service", SERVICES)
def test_systemd_units_start_the_real_cli(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    values = unit(f"cronbus-{service}.service")
    (exec_start,) = values["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/cronbus/bin/cronbus" and argv[1] == service
    assert "$" not in exec_start, "no systemd variable expansion: settings come from the EnvironmentFile"
    assert values["EnvironmentFile"] == ["/etc/cronbus/cronbus.env"]
    env = env_file()
    ctx = parse(argv[1:], env, monkeypatch)
    assert values["Restart"] == ["always"]
    if service == "executor":
        assert values["KillMode"] == ["mixed"], "SIGTERM to the executor only, so running jobs can drain"
        stop_s = int(values["TimeoutStopSec"][0])
        assert stop_s > ctx.params["drain_timeout"] + ctx.params["kill_grace"]
        assert ctx.params["tags"] == ("role=web", "zone=a")
    else:
        assert values["User"] == ["cronbus"] and values["NoNewPrivileges"] == ["yes"]
    if service == "gateway":
        assert parse_tokens(ctx.params["tokens"]), "a public gateway needs tokens"
    if service == "scheduler":
        assert ctx.params["advertise_host"] and ctx.params["router_port"] and ctx.params["pub_port"]


def env_file() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (SYSTEMD / "cronbus.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"cronbus.env: {line!r} is not KEY=value"
            env[key] = value
    return env


def test_every_variable_in_the_env_file_is_read_by_some_service() -> None:
    text = (SYSTEMD / "cronbus.env").read_text()
    mentioned = set(re.findall(r"^#? ?(CRONBUS_\w+)=", text, re.MULTILINE))
    assert len(mentioned) > 20
    assert mentioned - all_envvars() == set()


def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    cronbus = shutil.which("cronbus") or str(ROOT / ".venv" / "bin" / "cronbus")
    for path in SYSTEMD.glob("*.service"):
        text = path.read_text().replace("/opt/cronbus/bin/cronbus", cronbus)
        text = text.replace("/etc/cronbus/cronbus.env", str(SYSTEMD / "cronbus.env"))
        (tmp_path / path.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.glob("*.service"))
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in result.stderr.splitlines() if "cronbus" in line]
    assert result.returncode == 0 and not problems, result.stderr


# ---- metrics: docs and dashboard -----------------------------------------------------------------------------

_METRIC = re.compile(r"\"(cronbus_[a-z_]+)\"|# TYPE (cronbus_[a-z_]+) ")
_HISTOGRAM_PARTS = re.compile(r"_(bucket|sum|count)$")


def registered_metrics() -> set[str]:
    """Metric names as the code registers them (string literals of the services' metrics modules)."""
    names: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        text = path.read_text()
        if "Registry" in text or ".gauge(" in text or "# TYPE" in text:
            names.update(quoted or typed for quoted, typed in _METRIC.findall(text))
    return {_HISTOGRAM_PARTS.sub("", n) for n in names}


def test_every_metric_is_documented() -> None:
    documented = set(re.findall(r"^\| `(cronbus_\w+)`", (ROOT / "docs" / "metrics.md").read_text(), re.MULTILINE))
    found = registered_metrics()
    assert {"cronbus_dispatch_lag_seconds", "cronbus_executor_running", "cronbus_gateway_requests_total"} <= found
    assert found - documented == set(), "metrics missing from docs/metrics.md"
    assert documented - found == set(), "docs/metrics.md names metrics the code does not have"


def test_grafana_dashboard_queries_real_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = {_HISTOGRAM_PARTS.sub("", n) for e in exprs for n in re.findall(r"\b(cronbus_[a-z_]+)", e)}
    assert used - registered_metrics() == set()
    wanted = {"cronbus_dispatch_lag_seconds", "cronbus_fires_total", "cronbus_dispatched_total", "cronbus_missed_total",
              "cronbus_skipped_total", "cronbus_executions_finished_total", "cronbus_leader", "cronbus_leader_term",
              "cronbus_executor_running", "cronbus_gateway_requests_total",
              "cronbus_gateway_request_duration_seconds"}  # fmt: skip
    assert wanted <= used
    assert any("histogram_quantile(0.99" in e and "dispatch_lag" in e for e in exprs)
    assert any("histogram_quantile(0.5," in e and "dispatch_lag" in e for e in exprs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:  # on the grid, not overlapping horizontally
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_dkrons_webhook_flags_are_understood(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dkron 4's working flags are --webhook-endpoint and --webhook-headers (its --webhook-url is wired to
    nothing): a migrated command line configures the same webhook."""
    args = ["scheduler", "--webhook-endpoint", "http://hooks.example/done", "--webhook-headers", "X-Token: t",
            "--pre-webhook-endpoint", "http://hooks.example/start", "--pre-webhook-headers", "X-Token: s"]  # fmt: skip
    params = parse(args, {}, monkeypatch).params
    assert params["webhook_url"] == ("http://hooks.example/done",) and params["webhook_header"] == ("X-Token: t",)
    assert params["pre_webhook_url"] == "http://hooks.example/start"
    assert params["pre_webhook_header"] == ("X-Token: s",)
