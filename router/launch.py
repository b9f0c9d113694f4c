"""`python -m router.launch start …`: Crossbar's own command, writing tidings' log format.

With `TIDINGS_LOG_FORMAT=json` the node controller (which prints what every
Crossbar worker process logs) writes one JSON object per line
(tidings.log_lines), the fields a record carries (event_id, topic, session,
…) included; stdlib `logging` in the router's components goes through
Twisted's log too (router.logs). Otherwise it is `crossbar` as is.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from tidings import catalogue
from tidings.errors import ConfigError
from tidings.log_lines import json_line
from tidings.settings import Settings

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _json_observer(levels: tuple[str, ...], out: Any, node: str) -> Any:
    from twisted.logger import ILogObserver, formatEvent
    from zope.interface import provider

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        level = event.get("log_level")
        name = getattr(level, "name", str(level))
        if name not in levels:
            return
        message = _ANSI.sub("", formatEvent(event)).strip()
        if not message:
            return  # Crossbar's banner has blank decorations
        failure = event.get("log_failure")
        if failure is not None:
            message += "\n" + failure.getTraceback()
        system = str(event.get("log_system") or "-")
        process = "controller" if system == "-" else system.split()[0].lower()
        line = json_line(
            time=float(event.get("log_time") or 0),
            level=name,
            logger=str(event.get("cb_namespace") or event.get("log_namespace") or ""),
            message=message,
            node=node,
            process=process,
            pid=_pid_of(system),
            fields=event,
        )
        print(line, file=out, flush=True)

    return observe


def _pid_of(system: str) -> int:
    last = system.split()[-1] if system.split() else ""
    return int(last) if last.isdigit() else os.getpid()


def use_json(node: str) -> None:
    """Make Crossbar's controller write JSON lines (it picks its observers by these names)."""
    from crossbar.node import main as node_main

    def stdout(levels: Any = ("info",), **_: Any) -> Any:
        wanted = tuple(getattr(level, "name", str(level)) for level in levels)
        return _json_observer(wanted, sys.__stdout__, node)

    def stderr(levels: Any = ("warn", "error", "critical"), **_: Any) -> Any:
        wanted = tuple(getattr(level, "name", str(level)) for level in levels)
        return _json_observer(wanted, sys.__stderr__, node)

    node_main.make_stdout_observer = stdout  # type: ignore[assignment]
    node_main.make_stderr_observer = stderr  # type: ignore[assignment]


def main() -> int:
    try:
        settings = Settings.from_environ(os.environ)
        # The components read it when they join; a wrong entry stops the router here instead.
        catalogue.current()
    except ConfigError as exc:
        print(f"tidings router: {exc}", file=sys.stderr)
        return 2
    if settings.log_format == "json":
        use_json(settings.node)
    from crossbar import run

    sys.argv[0] = "crossbar"
    try:
        code = int(run() or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    # Crossbar ends with status 1 after a SIGTERM, its normal way to stop: a
    # service manager would take every stop for a crash.
    return 0 if code and _stopped_by_signal() else code


def _stopped_by_signal() -> bool:
    """Whether the reactor stopped because it was asked to (SIGTERM or Ctrl-C)."""
    import signal

    from twisted.internet import reactor

    return getattr(reactor, "_exitSignal", None) in (signal.SIGTERM, signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
