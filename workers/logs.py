"""The worker's log lines as JSON (`TIDINGS_LOG_FORMAT=json`): its own, Celery's and kombu's.

Celery sets up logging itself; once it has, the formatters of its handlers
are replaced (signals `after_setup_logger`, `after_setup_task_logger`), so
every record of the process goes out as one JSON object per line, with the
task id of the task being run when there is one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any

from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init

from tidings.log_lines import FIELDS, json_line
from workers.runtime import settings


class JsonFormatter(logging.Formatter):
    """Formats a record as tidings.log_lines.json_line."""

    def __init__(self, node: str, process: str = "worker") -> None:
        super().__init__()
        self.node = node
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        fields = {name: getattr(record, name, None) for name in FIELDS}
        if fields["task_id"] is None:
            fields["task_id"] = _current_task_id()
        return json_line(
            time=record.created,
            level=record.levelname,
            logger=record.name,
            message=message,
            node=self.node,
            process=self.process,
            pid=os.getpid(),
            fields=fields,
        )


def _current_task_id() -> str | None:
    from celery import current_task

    request = getattr(current_task, "request", None)
    task_id = getattr(request, "id", None)
    return task_id if isinstance(task_id, str) else None


def _to_json(logger: Any = None, **_: Any) -> None:
    config = settings()
    if config.log_format != "json" or logger is None:
        return
    formatter = JsonFormatter(config.node)
    for handler in [*logger.handlers, *logging.getLogger().handlers]:
        handler.setFormatter(formatter)
    # Python's warnings (Celery warns a root user) are records too, not bare text.
    logging.captureWarnings(True)


def _before_celery_logs(**_: Any) -> None:
    # Celery warns (a root user, say) before it sets up its logging: those
    # records need a JSON handler already.
    config = settings()
    if config.log_format != "json":
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(config.node))
    logging.getLogger().addHandler(handler)
    logging.captureWarnings(True)
    # What Celery's worker says from its signal handlers (a warm shutdown) it
    # writes straight to the file, bypassing logging: as a JSON line too.
    from celery.apps import worker as celery_worker

    def say(message: str, out: Any = sys.__stderr__) -> None:
        line = json_line(
            time=time.time(),
            level="warning",
            logger="celery.apps.worker",
            message=str(message).strip(),
            node=config.node,
            process="worker",
            pid=os.getpid(),
        )
        # A raw write, as Celery's own: this runs inside signal handlers.
        with contextlib.suppress(OSError, ValueError):
            os.write(out.fileno(), (line + "\n").encode())

    celery_worker.safe_say = say


celeryd_init.connect(_before_celery_logs, weak=False)
after_setup_logger.connect(_to_json, weak=False)
after_setup_task_logger.connect(_to_json, weak=False)
