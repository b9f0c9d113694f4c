"""rabbitmqctl for the fault tests: queue depths and connections of one vhost only."""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import unquote, urlsplit


def available() -> bool:
    return shutil.which("rabbitmqctl") is not None


def vhost_of(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _ctl(*args: str) -> list[list[str]]:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    )
    # -q prints a header line of column names, then one tab-separated row a line.
    return [line.split("\t") for line in result.stdout.splitlines()[1:] if line.strip()]


def queue_depths(url: str) -> dict[str, tuple[int, int]]:
    """{queue: (ready, unacknowledged)} of the URL's vhost."""
    rows = _ctl(
        "list_queues", "-p", vhost_of(url), "name", "messages_ready", "messages_unacknowledged"
    )
    return {name: (int(ready), int(unacked)) for name, ready, unacked in rows}


def connections(url: str) -> list[str]:
    """Process ids of the client connections to the URL's vhost, and only those."""
    vhost = vhost_of(url)
    # close_connection takes the connection's Erlang pid, not its name.
    return [pid for pid, host in _ctl("list_connections", "pid", "vhost") if host == vhost]


def close_connections(url: str, reason: str) -> int:
    """Close every connection of the URL's vhost (never another vhost's); how many."""
    pids = connections(url)
    # One rabbitmqctl takes about a second: close them all at once.
    closing = [
        subprocess.Popen(
            ["rabbitmqctl", "-q", "close_connection", pid, reason],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    for process in closing:
        process.wait(60)  # its status is moot: the connection may have gone by itself
    return len(pids)


def explain(url: str) -> str:
    """Queue depths for a failure message: are missing events queued, or held unacked?"""
    try:
        return f"queues (ready, unacked): {queue_depths(url)}"
    except Exception as exc:  # the explanation must not hide the failure
        return f"queue depths unavailable: {exc}"
