"""The only code that talks to Consul."""
