"""`make bench` (`python -m bench`): run the benchmark, print the table, write results.json/.png."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench import main as bench_main
from bench import report
from tidings.settings import Settings


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--out", default="bench", help="folder for results.json and results.png")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--pool", default="threads", help="Celery pool of the workers under test")
    p.add_argument("--concurrency", type=int, default=8, help="pool size per worker process")
    p.add_argument(
        "--only",
        help="comma-separated runs: a,a2,a',b,c,d,e,lat-a,...,fanout,chat,connections,"
        "nodes,restart,sessions",
    )
    p.add_argument("--quick", action="store_true", help="short runs, for trying changes")
    p.add_argument("--keep", action="store_true", help="keep the processes' logs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    options = bench_main.Options(
        broker_url=Settings.from_environ(os.environ).broker_url,
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
        options.node_subscribers, options.node_events = 100, 20
        options.restart_clients, options.restart_before, options.restart_after = 50, 2.0, 2.0
        options.node_sessions = (1000, 2000)
    try:
        results = bench_main.run(options)
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"the bench stopped: {exc}", file=sys.stderr)
        return 2
    print(report.table(results))
    print(f"\nwrote {options.out / 'results.json'} and {options.out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
