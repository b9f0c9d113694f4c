"""What a bench run measures: a throw-away vhost, a router with an HTTP bridge, and workers."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path
from typing import Any

from celery import Celery

from cli.worker import worker_argv
from harness.processes import ROOT, Router, Worker, project_router_config
from harness.vhost import isolated_vhost

BRIDGE_PATH = "publish"
BRIDGE_KEY = "tidings-bench"
DEFAULT_NODE = "bench"


def bench_router_config(bridge_secret: str, max_connections: int | None = None) -> dict[str, Any]:
    """The project's router configuration plus Crossbar's HTTP bridge publisher for (b),
    which takes signed POSTs only, from loopback only. `max_connections`: the web
    transport's limit, raised as a deployment holding more sessions would."""
    config = project_router_config()
    for worker in config["workers"]:
        for transport in worker.get("transports", []):
            if transport["type"] == "web":
                if max_connections is not None:
                    transport["max_connections"] = max_connections
                transport["paths"][BRIDGE_PATH] = {
                    "type": "publisher",
                    "realm": "tidings",
                    "role": "backend",
                    "options": {
                        "key": BRIDGE_KEY,
                        "secret": bridge_secret,
                        "post_body_limit": 65536,
                        "timestamp_delta_limit": 60,
                        "require_ip": ["127.0.0.1/32"],
                    },
                }
    return config


class BenchWorker(Worker):
    """`tidings worker` with the baselines' tasks loaded; ready when it answers a ping.

    It runs at WARNING level, like a busy production worker: INFO logs two
    lines per task, which the bench would otherwise measure as well.
    """

    def __init__(self, stack: Stack, index: int, pool: str, concurrency: int, loglevel: str):
        # Unique in the vhost, which the nodes of a shared-mode pair share.
        node = "" if stack.node == DEFAULT_NODE else f"-{stack.node}"
        self.hostname = f"bench{index}{node}-{os.getpid()}@localhost"
        argv = worker_argv(concurrency, pool, loglevel)
        argv[argv.index("--hostname") + 1] = self.hostname
        super().__init__(
            stack.router,
            stack.broker_url,
            stack.dir,
            "--include",
            "bench.tasks",
            env=stack.env,
            name=f"worker{index}",
            argv=argv,
        )
        self._probe = stack.probe
        self._wrapper = list(stack.worker_wrapper)

    def start(self, timeout: float = 60) -> BenchWorker:
        if self._wrapper:
            timeout *= 10  # a worker under valgrind starts several times slower
        argv = [*self._wrapper, *self.argv, *self.extra]
        self._spawn(argv, self.env, self.logdir / f"{self.name}.log", ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the worker exited; see {self.logdir / self.name}.log")
            if self._probe.control.ping([self.hostname], timeout=0.5):
                return self
        raise TimeoutError(f"the worker did not answer within {timeout}s")


class Stack:
    """Router, vhost and workers for one bench run; a context manager that cleans up."""

    def __init__(
        self,
        workdir: Path,
        broker_url: str,
        *,
        pool: str,
        concurrency: int,
        loglevel: str,
        redis_url: str | None = None,
        metrics: bool = True,
        node: str = DEFAULT_NODE,
        share: Stack | None = None,
        max_connections: int | None = None,
        env: dict[str, str] | None = None,
        worker_wrapper: tuple[str, ...] = (),
    ) -> None:
        """redis_url: shared mode (history and presence in that Redis); metrics: off
        counts nothing and serves no endpoint (TIDINGS_*_METRICS_PORT=0); node: the
        router node's name (TIDINGS_NODE, shared mode); share: another node of the same
        deployment, whose vhost and secrets this one uses; max_connections: the router's
        WebSocket connection limit (the project's config's if None); env: more settings
        for the router and the workers; worker_wrapper: a command each worker runs under
        (bench.instructions: callgrind)."""
        self.redis_url = redis_url
        self.metrics = metrics
        self.node = node
        self.share = share
        self.max_connections = max_connections
        self.extra_env = dict(env or {})
        self.worker_wrapper = worker_wrapper
        self.dir = workdir
        self.pool = pool
        self.concurrency = concurrency
        self.loglevel = loglevel
        # One deployment's nodes share its secrets.
        self.secret: str = share.secret if share else secrets.token_hex(24)
        self.backend_secret: str = share.backend_secret if share else secrets.token_hex(24)
        self.bridge_secret: str = share.bridge_secret if share else secrets.token_hex(24)
        self._broker_root = broker_url
        self._exit = contextlib.ExitStack()
        self.workers: list[BenchWorker] = []
        self.counts = workdir / "counts"

    def __enter__(self) -> Stack:
        self.broker_url: str
        if self.share is not None:
            self.broker_url = self.share.broker_url
        else:
            self.broker_url = self._exit.enter_context(
                isolated_vhost(self._broker_root, prefix="tidings-bench")
            )
        self.probe = Celery("bench-probe", broker=self.broker_url, set_as_current=False)
        self._exit.callback(self.stop_workers, 0)
        # At info level the router logs three lines per connection, a quarter of
        # its CPU while thousands connect; under load it runs at warning level.
        self.router = Router(
            self.dir / "router",
            env=self.router_env(),
            config=bench_router_config(self.bridge_secret, self.max_connections),
            loglevel="warn",
        )
        self._exit.callback(self.router.stop)
        self.router.start()
        self.env = {
            **self.router_env(),
            "TIDINGS_ROUTER_URL": self.router.rs_url,
            "TIDINGS_BROKER_URL": self.broker_url,
            "TIDINGS_BENCH_BRIDGE_URL": f"{self.router.http_url}{BRIDGE_PATH}",
            "TIDINGS_BENCH_BRIDGE_KEY": BRIDGE_KEY,
            "TIDINGS_BENCH_BRIDGE_SECRET": self.bridge_secret,
            "TIDINGS_BENCH_COUNTS": str(self.counts),
            # The worker imports bench.tasks from the checkout.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def router_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TIDINGS_DEV="0",
            TIDINGS_SECRET=self.secret,
            TIDINGS_BACKEND_SECRET=self.backend_secret,
            PYTHONUNBUFFERED="1",
            # The router's chat enqueues here, never on the broker's default vhost.
            TIDINGS_BROKER_URL=self.broker_url,
            # The chat run measures the pipeline, not the per-user limit.
            TIDINGS_CHAT_RATE="100000",
        )
        if self.redis_url:
            env.update(TIDINGS_REDIS_URL=self.redis_url, TIDINGS_NODE=self.node)
        if not self.metrics:
            env.update(TIDINGS_ROUTER_METRICS_PORT="0", TIDINGS_WORKER_METRICS_PORT="0")
        env.update(self.extra_env)
        return env

    def scale_workers(self, count: int) -> None:
        """Start or stop worker processes until `count` run."""
        while len(self.workers) > count:
            self.workers.pop().stop()
        while len(self.workers) < count:
            worker = BenchWorker(
                self, len(self.workers) + 1, self.pool, self.concurrency, self.loglevel
            )
            self.workers.append(worker.start())

    def stop_workers(self, keep: int = 0) -> None:
        self.scale_workers(keep)

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.alive()]
