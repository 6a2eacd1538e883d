"""The `cronbus` client commands (jobs, executions, cluster, backup, crontab import) and the typed HTTP client of
the gateway's API they talk through. They run on an operator's machine; the gateway server is
`services/gateway/service.py` and `api/`."""
