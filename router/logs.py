"""Stdlib `logging` in the router process goes through Twisted's log, as Crossbar's own does.

Crossbar prints what its worker processes log through Twisted's logger; a
record of the stdlib `logging` module (tidings' modules, redis, PyJWT) would
otherwise go to the worker's stderr as bare text, outside the log format.
"""

from __future__ import annotations

import logging

from twisted.logger import Logger, LogLevel

from tidings.log_lines import FIELDS

_LEVELS = {
    logging.DEBUG: LogLevel.debug,
    logging.INFO: LogLevel.info,
    logging.WARNING: LogLevel.warn,
    logging.ERROR: LogLevel.error,
    logging.CRITICAL: LogLevel.critical,
}


class ToTwisted(logging.Handler):
    """Hands each record to Twisted's log, with the fields tidings' log lines keep."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            level = _LEVELS.get(
                record.levelno, LogLevel.error if record.levelno > 40 else LogLevel.info
            )
            fields = {n: getattr(record, n) for n in FIELDS if getattr(record, n, None) is not None}
            Logger(namespace=record.name).emit(level, "{text}", text=message, **fields)
        except Exception:
            self.handleError(record)


def install() -> None:
    """Route the root logger's records (INFO and up) to Twisted's log; once per process."""
    root = logging.getLogger()
    if any(isinstance(handler, ToTwisted) for handler in root.handlers):
        return
    root.addHandler(ToTwisted())
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
