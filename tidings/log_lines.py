"""One log record as one JSON object on one line: the shape every tidings process writes.

`TIDINGS_LOG_FORMAT=json` makes the router (router.launch) and the worker
(workers.logs) write their records, Crossbar's, Celery's and kombu's
included, through `json_line`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# What a record says about an event when it knows: kept as fields of their own.
FIELDS = ("event_id", "topic", "task_id", "session", "authid", "reason")


def json_line(
    *,
    time: float,
    level: str,
    logger: str,
    message: str,
    node: str,
    process: str,
    pid: int,
    fields: Mapping[str, Any] | None = None,
) -> str:
    """The JSON line of one record; `fields` may hold FIELDS (others are left out)."""
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(time, UTC).isoformat(timespec="milliseconds"),
        "level": level.lower(),
        "logger": logger,
        "message": message,
        "node": node,
        "process": process,
        "pid": pid,
    }
    for name in FIELDS:
        value = (fields or {}).get(name)
        if value is not None:
            record[name] = value if isinstance(value, str | int | float | bool) else str(value)
    return json.dumps(record, ensure_ascii=False, default=str)
