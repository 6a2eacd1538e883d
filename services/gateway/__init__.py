"""The cronbus gateway service."""
