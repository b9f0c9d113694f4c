"""The `tidings` command line: tickets, publishing, and running the router and workers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tidings.settings import ConfigError, Settings, load


class CliError(Exception):
    """A mistake the user can fix; printed as one line, without a traceback."""


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _router_env(config: Settings) -> dict[str, str]:
    """The environment the router needs, with secrets checked (dev defaults filled in)."""
    env = dict(os.environ)
    env["TIDINGS_SECRET"] = config.require_secret()
    env["TIDINGS_BACKEND_SECRET"] = config.require_backend_secret()
    return env


# -- subcommands ----------------------------------------------------------------
def cmd_ticket(args: argparse.Namespace, config: Settings) -> int:
    from publisher import tickets

    try:
        print(tickets.issue(config.require_secret(), args.user, args.perm, args.ttl))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return 0


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}") from None


def send_task(config: Settings, name: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    """Enqueue a tidings task on the durable `tidings` queue; fails fast if the broker is down."""
    from kombu.exceptions import OperationalError

    from workers.celery_app import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            result = app.send_task(name, args, kwargs, queue="tidings", connection=conn)
    except (OperationalError, OSError) as exc:
        from kombu import Connection

        where = Connection(config.broker_url).as_uri()
        raise CliError(f"cannot reach the broker at {where}: {exc}") from None
    return str(result.id)


def cmd_publish(args: argparse.Namespace, config: Settings) -> int:
    from publisher import topics

    payload = _parse_json(args.payload, "the payload")
    if not isinstance(payload, dict):
        raise CliError('the payload must be a JSON object, e.g. \'{"text": "hello"}\'')
    try:
        topics.require(args.topic)
    except topics.UnknownTopic as exc:
        raise CliError(str(exc)) from None
    kwargs: dict[str, Any] = {"retain": args.retain}
    if args.exclude:
        kwargs["exclude_authids"] = args.exclude
    if args.only:
        kwargs["eligible_authids"] = args.only
    task_id = send_task(config, "tidings.publish", [args.topic, payload], kwargs)
    print(f"queued tidings.publish {task_id}")
    return 0


def cmd_maintenance(args: argparse.Namespace, config: Settings) -> int:
    if args.action == "status":
        state = call_router(config, "tidings.maintenance.status")
        print(json.dumps(state) if args.json else describe_maintenance(state))
        return 0
    kwargs: dict[str, Any] = {}
    if args.message is not None:
        kwargs["message"] = args.message
    if args.by is not None:
        kwargs["by"] = args.by
    task_id = send_task(config, "tidings.maintenance", [args.action == "on"], kwargs)
    print(f"queued tidings.maintenance {task_id}: maintenance {args.action}")
    return 0


def describe_maintenance(state: dict[str, Any]) -> str:
    if not state.get("enabled"):
        return "maintenance off" + (f" since {state['at']}" if state.get("at") else "")
    line = "maintenance ON" + (f" since {state['at']}" if state.get("at") else "")
    if state.get("by") is not None:
        line += f" by {state['by']}"
    return line + (f": {state['message']}" if state.get("message") else "")


def call_router(config: Settings, procedure: str, *args: Any, timeout: float = 5.0) -> Any:
    """Call a router-side procedure as the backend; fails fast if the router is down."""
    import asyncio

    from publisher.connection import Credentials, WampConnection
    from tidings.settings import BACKEND_AUTHID, REALM

    credentials = Credentials(BACKEND_AUTHID, "wampcra", config.require_backend_secret())
    connection = WampConnection(config.router_url, REALM, credentials, name="tidings-cli")

    async def ask() -> Any:
        session = await connection.session()
        return await session.call(procedure, *args)

    try:
        return connection.submit(asyncio.wait_for(ask(), timeout)).result(timeout + 1)
    except TimeoutError:
        why = f" ({connection.last_error})" if connection.last_error else ""
        raise CliError(f"no answer from the router at {config.router_url}{why}") from None
    except Exception as exc:
        raise CliError(f"the router refused {procedure}: {exc}") from None
    finally:
        connection.close()


def cmd_status(args: argparse.Namespace, config: Settings) -> int:
    from tidings import status

    health = status.check(config, args.timeout)
    print(json.dumps(health.as_dict()) if args.json else status.render(health))
    # Not 2: nothing is wrong with the command; something is down (for health checks).
    return 1 if health.down else 0


def cmd_dead_letters(args: argparse.Namespace, config: Settings) -> int:
    from kombu import Connection
    from kombu.exceptions import OperationalError

    from tidings import dead_letters

    try:
        if args.action == "list":
            count, letters = dead_letters.browse(config.broker_url, args.limit or 20)
            if args.json:
                print(json.dumps({"count": count, "first": [d.as_dict() for d in letters]}))
            else:
                print(dead_letters.render(count, letters))
            return 0
        done = dead_letters.replay(config.broker_url, args.limit, args.match)
    except (OperationalError, OSError) as exc:
        where = Connection(config.broker_url).as_uri()
        raise CliError(f"cannot reach the broker at {where}: {exc}") from None
    print(
        f"replayed {done.events} events and {done.tasks} tasks; "
        f"{done.skipped} left in tidings.events.dead"
    )
    return 0


def cmd_router(args: argparse.Namespace, config: Settings) -> int:
    env = _router_env(config)
    cbdir = Path(args.cbdir or config.cbdir)
    if not (cbdir / "config.json").is_file():
        raise CliError(f"no router configuration at {cbdir / 'config.json'}")
    argv = [_venv_bin("crossbar"), "start", "--cbdir", str(cbdir), "--loglevel", args.loglevel]
    os.execve(argv[0], argv, env)
    return 0  # not reached


def worker_argv(concurrency: int, pool: str, loglevel: str) -> list[str]:
    return [
        _venv_bin("celery"),
        "-A",
        "workers.celery_app",
        "worker",
        "-Q",
        "tidings",
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


def cmd_worker(args: argparse.Namespace, config: Settings) -> int:
    config.require_backend_secret()
    env = dict(os.environ)
    env["TIDINGS_BACKEND_SECRET"] = config.require_backend_secret()
    argv = worker_argv(args.concurrency, args.pool, args.loglevel)
    os.execve(argv[0], argv, env)
    return 0  # not reached


def cmd_run(args: argparse.Namespace, config: Settings) -> int:
    from tidings.supervise import run_all

    _router_env(config)  # refuse early, with one line, if secrets are missing
    return run_all(config)


def cmd_bench(args: argparse.Namespace, config: Settings) -> int:
    from tidings.settings import PROJECT_ROOT

    # The bench lives in the checkout (bench/), not in the installed package.
    sys.path.insert(0, str(PROJECT_ROOT))
    try:
        from bench import main as bench_main
    except ImportError as exc:
        raise CliError(f"tidings bench runs from a checkout with `make bench`: {exc}") from None
    options = bench_main.Options(
        broker_url=config.broker_url,
        out=Path(args.out),
        seconds=args.seconds,
        pool=args.pool,
        concurrency=args.concurrency,
        only=set(args.only.split(",")) if args.only else set(),
        keep=args.keep,
    )
    if args.quick:
        options.seconds, options.warmup = min(args.seconds, 3.0), 1.0
        options.fanout, options.fanout_events, options.sessions, options.hold = (1, 100), 40, 400, 2
        options.rounds = 1
    try:
        results = bench_main.run(options)
    except (OSError, RuntimeError, TimeoutError) as exc:
        raise CliError(f"the bench stopped: {exc}") from None
    print(bench_main.report.table(results))
    print(f"\nwrote {options.out / 'results.json'} and {options.out / 'results.png'}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "ticket": cmd_ticket,
    "publish": cmd_publish,
    "maintenance": cmd_maintenance,
    "status": cmd_status,
    "dead-letters": cmd_dead_letters,
    "router": cmd_router,
    "worker": cmd_worker,
    "run": cmd_run,
    "bench": cmd_bench,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings", description="Real-time notifications: domain events to browsers over WAMP."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ticket", help="print a one-time browser ticket (JWT) for a user")
    p.add_argument("--user", required=True, help="user id; becomes the WAMP authid")
    p.add_argument("--perm", action="append", default=[], help="permission, e.g. entity:order:view")
    p.add_argument("--ttl", type=int, default=300, help="seconds until it expires (max 3600)")

    p = sub.add_parser("publish", help="enqueue tidings.publish(TOPIC, PAYLOAD)")
    p.add_argument("topic", help="a catalogue topic, e.g. tidings.user.7")
    p.add_argument("payload", help="a JSON object")
    p.add_argument("--retain", action="store_true", help="the router keeps it for late joiners")
    p.add_argument("--exclude", action="append", help="user id not to deliver to")
    p.add_argument("--only", action="append", help="deliver only to this user id")

    p = sub.add_parser("maintenance", help="maintenance mode: on, off, or show its status")
    p.add_argument("action", choices=["on", "off", "status"])
    p.add_argument("--message", help="what users are told, e.g. 'back at 14:00'")
    p.add_argument("--by", help="user id of who switched it")
    p.add_argument("--json", action="store_true", help="status as JSON")

    p = sub.add_parser(
        "status", help="broker, router, backend session, queues; exit status 1 if one is down"
    )
    p.add_argument("--json", action="store_true", help="as JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds each check may take")

    p = sub.add_parser("dead-letters", help="list or replay the dead-letter queue")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--limit", type=int, help="at most this many (list: 20 unless given)")
    p.add_argument("--match", help="replay only those whose reason contains this text")
    p.add_argument("--json", action="store_true", help="list as JSON")

    p = sub.add_parser("router", help="start the Crossbar router (foreground)")
    p.add_argument("--cbdir", help="router directory (default .crossbar or TIDINGS_CBDIR)")
    p.add_argument("--loglevel", default="info")

    p = sub.add_parser("worker", help="start a Celery worker (foreground)")
    p.add_argument("--concurrency", type=int, default=8, help="threads running tasks")
    p.add_argument("--pool", default="threads", help="Celery pool: threads, prefork or solo")
    # INFO logs two lines per task, a third of a busy worker's CPU (make bench).
    p.add_argument("--loglevel", default="WARNING", help="INFO also logs every task")

    sub.add_parser("run", help="router and worker together (Ctrl-C stops both)")

    p = sub.add_parser("bench", help="the benchmark (make bench): writes bench/results.*")
    p.add_argument("--out", default="bench", help="folder for results.json and results.png")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--pool", default="threads", help="Celery pool of the workers under test")
    p.add_argument("--concurrency", type=int, default=8, help="pool size per worker process")
    p.add_argument("--only", help="comma-separated runs: a,a2,a',b,c,d,e,lat-a,...,fanout")
    p.add_argument("--quick", action="store_true", help="short runs, for trying changes")
    p.add_argument("--keep", action="store_true", help="keep the processes' logs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, load())
    except (CliError, ConfigError) as exc:
        print(f"tidings {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
