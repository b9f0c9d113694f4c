"""`tidings worker`: a Celery worker consuming tasks and raw events, in the foreground."""

from __future__ import annotations

import argparse
import os

from cli.common import venv_bin
from tidings.names import TASK_QUEUE
from tidings.settings import Settings

HELP = "start a Celery worker (foreground)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=int, default=8, help="threads running tasks")
    p.add_argument("--pool", default="threads", help="Celery pool: threads, prefork or solo")
    # INFO logs two lines per task, a third of a busy worker's CPU (make bench).
    p.add_argument("--loglevel", default="WARNING", help="INFO also logs every task")
    p.add_argument("--quiet", action="store_true", help="no start-up banner")


def worker_argv(concurrency: int, pool: str, loglevel: str, quiet: bool = False) -> list[str]:
    return [
        venv_bin("celery"),
        "-A",
        "workers.celery_app",
        *(["--quiet"] if quiet else []),
        "worker",
        "-Q",
        TASK_QUEUE,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        f"tidings-{os.getpid()}@%h",
    ]


def run(args: argparse.Namespace, settings: Settings) -> int:
    env = dict(os.environ)
    env["TIDINGS_BACKEND_SECRET"] = settings.require_backend_secret()
    # JSON lines only: no start-up banner, which is text.
    quiet = args.quiet or settings.log_format == "json"
    argv = worker_argv(args.concurrency, args.pool, args.loglevel, quiet)
    os.execve(argv[0], argv, env)
    return 0  # not reached
