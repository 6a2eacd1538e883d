"""The `cronbus` command: service commands (scheduler, executor, gateway, dev) and the client commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from cronbus.services.dev import dev_command
from cronbus.services.executor.cli import executor_command
from cronbus.services.gateway.cli import gateway_command
from cronbus.services.gateway.client.commands import CLIENT_COMMANDS
from cronbus.services.keygen import keygen_command
from cronbus.services.scheduler.cli import scheduler_command


def _load_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    """A YAML file with one section per command; its values sit below flags and CRONBUS_* variables."""
    if value is None:
        return
    try:
        data: Any = yaml.safe_load(value.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {value}: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise click.BadParameter(f"{value}: expected a mapping of command name to settings")
    ctx.default_map = {k: {o.replace("-", "_"): v for o, v in (s or {}).items()} for k, s in (data or {}).items()}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), envvar="CRONBUS_CONFIG",
              callback=_load_config, expose_value=False, is_eager=True,
              help="YAML settings file, one section per command (e.g. scheduler:, executor:).")  # fmt: skip
@click.version_option(package_name="cronbus")
def main() -> None:
    """cronbus: distributed, fault-tolerant cron, a drop-in replacement for Dkron."""


main.add_command(scheduler_command)
main.add_command(executor_command)
main.add_command(gateway_command)
main.add_command(dev_command)
main.add_command(keygen_command)
for _command in CLIENT_COMMANDS:
    main.add_command(_command)
