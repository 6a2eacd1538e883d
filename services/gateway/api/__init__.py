"""The Dkron v1 compatible HTTP API."""
