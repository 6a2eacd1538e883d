"""`cronbus keygen`: writes the cluster's CURVE key pair for an encrypted, authenticated bus."""

from __future__ import annotations

import click

from cronbus.common.bus import write_keys


@click.command("keygen")
@click.argument("path_stem", metavar="PATH")
def keygen_command(path_stem: str) -> None:
    """Write a CURVE key pair to PATH.key (public) and PATH.key_secret (public + secret, mode 600).

    Give PATH.key_secret to every scheduler, executor and gateway with --curve-key (or CRONBUS_CURVE_KEY).
    A process without it can neither receive dispatches nor send results or commands.
    """
    public, secret = write_keys(path_stem)
    click.echo(f"public key: {public}\nkey pair:   {secret}  (pass this one to --curve-key)")
