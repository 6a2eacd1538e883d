"""Logging set-up, called once by each CLI: human-readable lines by default, JSON lines on request."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Final

# The `key=value` context the house style puts in messages (`job=... exec=...`) that JSON lines carry as
# fields, so a log store can filter on them. Only these keys: a job's output in a message must not add fields.
CONTEXT_FIELDS: Final = ("job", "exec", "node", "term", "status")
_CONTEXT = re.compile(r"(?<![\w.-])(" + "|".join(CONTEXT_FIELDS) + r")=([^\s,;:()\[\]]+)")


def context_fields(message: str) -> dict[str, str | int]:
    """The first value of each context key in the message's first line (`term` as a number)."""
    found: dict[str, str | int] = {}
    for key, value in _CONTEXT.findall(message.partition("\n")[0]):
        if key not in found:
            found[key] = int(value) if key == "term" and value.isdigit() else value
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the context fields found in msg, and exc."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        for key, value in context_fields(message).items():
            entry.setdefault(key, value)
        for key in CONTEXT_FIELDS:  # logging's `extra=` wins over what the text says
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(level: str = "info", fmt: str = "text", process: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"{process} " if process else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {prefix}%(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncio", "aiohttp", "httpx", "httpcore", "urllib3", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
