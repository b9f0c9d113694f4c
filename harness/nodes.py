"""A router node of shared mode: a router and the worker that feeds it, on free ports."""

from __future__ import annotations

import json
from pathlib import Path

from harness.processes import Router, Worker, base_env


class Node:
    """Router and worker of node `name`, sharing history and presence through `redis_url`."""

    def __init__(
        self, name: str, folder: Path, broker_url: str, redis_url: str, **env: str
    ) -> None:
        shared = base_env(TIDINGS_REDIS_URL=redis_url, TIDINGS_NODE=name, **env)
        self.name = name
        self.router = Router(folder / f"router-{name}", env=shared)
        self.worker = Worker(self.router, broker_url, folder, name=f"worker-{name}", env=shared)

    def allow_pages_of(self, *others: Node) -> Node:
        """Let pages served by other nodes connect here (a page fails over between nodes)."""
        for transport in self.router.config["workers"][0]["transports"]:
            if transport["type"] == "web":
                origins = transport["paths"]["ws"]["options"]["allowed_origins"]
                origins += [f"http://127.0.0.1:{other.router.web_port}" for other in others]
        (self.router.cbdir / "config.json").write_text(json.dumps(self.router.config, indent=2))
        return self

    def start(self) -> Node:
        self.router.start()
        self.worker.start()
        return self

    def kill(self) -> None:
        """SIGKILL both: no goodbye, no acks on the way out."""
        self.worker.kill()
        self.router.kill()

    def stop(self) -> None:
        self.worker.stop()
        self.router.stop()
