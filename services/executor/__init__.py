"""The cronbus executor service."""
