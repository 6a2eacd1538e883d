"""`python -m cronbus.services` is the `cronbus` command."""

from cronbus.services.cli import main

main()
