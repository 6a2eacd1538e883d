"""The web UI: static assets served by the gateway."""
