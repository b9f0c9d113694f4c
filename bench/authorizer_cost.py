"""What the dynamic authorizer costs: subscribe and publish rates with it and with static roles.

Run: .venv/bin/python -m bench.authorizer_cost
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.clients import Subscriber, ticket
from harness.processes import Router, base_env
from publisher import Publisher
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from tidings.names import REALM
from tidings.settings import Settings

SUBSCRIBES = 2000
PUBLISHES = 5000
WINDOW = 100  # requests in flight at once

# The permissions the frontend role had before the dynamic authorizer: every
# `tidings.*` topic for every browser. Only for comparison.
STATIC_FRONTEND = {
    "name": "frontend",
    "permissions": [
        {
            "uri": "tidings.",
            "match": "prefix",
            "allow": {"call": True, "register": False, "publish": False, "subscribe": True},
            "disclose": {"caller": False, "publisher": False},
            "cache": True,
        }
    ],
}


def static_router(workdir: Path) -> Router:
    router = Router(workdir)
    for worker in router.config["workers"]:
        for realm in worker.get("realms", []):
            realm["roles"] = [
                r if r["name"] != "frontend" else STATIC_FRONTEND for r in realm["roles"]
            ]
    (router.cbdir / "config.json").write_text(json.dumps(router.config, indent=2))
    return router


async def _windowed(calls: list[Any]) -> None:
    for start in range(0, len(calls), WINDOW):
        await asyncio.gather(*(c() for c in calls[start : start + WINDOW]))


def subscribe_rate(router: Router) -> float:
    credentials = Credentials(None, "ticket", lambda: ticket("7", ["entity:order:view"]))
    conn = WampConnection(router.ws_url, REALM, credentials).start()
    try:
        session = conn.wait_joined(10)
        calls = [
            (lambda i=i: session.subscribe(lambda *_: None, f"tidings.entity.order.{i}"))
            for i in range(SUBSCRIBES)
        ]
        started = time.perf_counter()
        conn.submit(_windowed(calls)).result(120)
        return SUBSCRIBES / (time.perf_counter() - started)
    finally:
        conn.close()


def publish_rate(router: Router) -> float:
    config = Settings.from_environ(os.environ)
    publisher = Publisher(config.__class__(**{**config.__dict__, "router_url": router.rs_url}))
    publisher.start()
    sub = Subscriber(router.ws_url, "7", ["tidings.entity.order.1"], ["entity:order:view"]).start()
    try:
        publisher.publish("tidings.entity.order.1", {"warm": True})
        started = time.perf_counter()
        futures = []
        for i in range(PUBLISHES):
            futures.append(publisher.publish_async("tidings.entity.order.1", {"i": i}))
            if len(futures) >= WINDOW:
                for f in futures:
                    f.result(30)
                futures = []
        for f in futures:
            f.result(30)
        sub.wait_count(PUBLISHES + 1, timeout=60)
        return PUBLISHES / (time.perf_counter() - started)
    finally:
        sub.close()
        publisher.close()


def main() -> None:
    os.environ.update(base_env())  # the routers' dev secrets, for this process's clients
    results: dict[str, dict[str, float]] = {}
    for name, make in (("static roles", static_router), ("dynamic authorizer", Router)):
        router = make(Path(tempfile.mkdtemp(prefix="tidings-authz-"))).start()
        try:
            results[name] = {
                "subscribe/s": subscribe_rate(router),
                "publish/s": publish_rate(router),
            }
        finally:
            router.stop()
        print(
            f"{name:20} subscribe {results[name]['subscribe/s']:8.0f}/s  "
            f"publish+deliver {results[name]['publish/s']:8.0f}/s"
        )
    for metric in ("subscribe/s", "publish/s"):
        ratio = results["dynamic authorizer"][metric] / results["static roles"][metric]
        print(f"{metric}: dynamic / static = {ratio:.2f}")


if __name__ == "__main__":
    main()
