"""`cronbus keygen`: writes bus key pairs per role (schedulers, executors, gateways) and their allow-lists."""

from __future__ import annotations

import os

import click

from cronbus.common.bus import PUBLIC_FOLDER, key_files_taken, write_key_pair
from cronbus.common.errors import SettingsError
from cronbus.common.messages import BUS_ROLES, BusRole


@click.command("keygen")
@click.argument("directory", metavar="DIR")
@click.option("--role", type=click.Choice(BUS_ROLES), help="Write one pair, of this role (default: one of each role).")
@click.option("--name", default="", help="File name of that pair (default: the role): a per-process or a new pair.")
def keygen_command(directory: str, role: BusRole | None, name: str) -> None:
    """Write CURVE key pairs for the bus into DIR, one per role, and the allow-lists that admit them.

    \b
    DIR/scheduler.key_secret   DIR/public/schedulers/scheduler.key
    DIR/executor.key_secret    DIR/public/executors/executor.key
    DIR/gateway.key_secret     DIR/public/gateways/gateway.key

    A .key_secret file is a key pair (mode 600): give it to the processes of its role only. DIR/public/ holds the
    public keys, which are no secret: copy it to every host. Run every process with --curve-keys DIR (its pair is
    DIR/<role>.key_secret, or --curve-key FILE). The schedulers admit only executors' and gateways' keys, take
    only results from executors' and only requests from gateways'; executors and gateways talk only to a leader
    holding a scheduler's key.

    With --role (and --name), one more pair: a pair of its own for one process, or the new pair when a role's key
    is rolled (docs/production.md, "Rolling a key"). Nothing is ever overwritten.
    """
    if name and role is None:
        raise click.BadParameter("--name names one pair: give its --role too", param_hint="--name")
    pairs: list[tuple[BusRole, str]] = [(role, name or role)] if role is not None else [(r, r) for r in BUS_ROLES]
    for _, its_name in pairs:  # checked before anything is written, so a refusal leaves DIR as it was
        if taken := key_files_taken(directory, its_name):
            raise click.ClickException(f"{taken[0]} exists: nothing written (choose another --name, or remove it)")
    for its_role, its_name in pairs:
        try:
            public, pair = write_key_pair(directory, its_role, its_name)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{its_role:<9} key pair: {pair}  (for {its_role}s only)\n          public key: {public}")
    click.echo(f"Copy {os.path.join(directory, PUBLIC_FOLDER)}/ to every host; then SIGHUP the running processes.")
