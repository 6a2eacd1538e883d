"""The cronbus scheduler service."""
