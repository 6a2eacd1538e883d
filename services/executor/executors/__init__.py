"""Job executors: shell, http, noop."""
