"""The baselines' Celery tasks, loaded into the bench's worker next to tidings' own.

Same app, same broker and worker settings as `tidings.publish`, so the only
difference between paths is how (or whether) a task reaches the router.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import threading
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import requests
from autobahn.wamp.types import PublishOptions

from bench.counter import Counter
from publisher.connection import WampConnection
from publisher.credentials import Credentials
from tidings.names import BACKEND_AUTHID, REALM
from workers.celery_app import app
from workers.runtime import settings

_local = threading.local()
_seq = count()


_counter: Counter | None = None
_counter_lock = threading.Lock()


def _finished() -> None:
    global _counter
    if _counter is None:
        with _counter_lock:
            if _counter is None:
                _counter = Counter(Path(os.environ["TIDINGS_BENCH_COUNTS"]))
    _counter.add()


@app.task(name="bench.noop")
def noop(topic: str, payload: dict[str, Any]) -> int:
    """(e): Celery's own cost per task, the ceiling for tidings.publish; only counts itself."""
    _finished()
    return 0


def _signed_post(url: str, key: str, secret: str, body: bytes) -> requests.Response:
    """One POST to Crossbar's HTTP bridge, signed as its docs say: HMAC-SHA256 over
    key | timestamp | seq | nonce | body, URL-safe base64."""
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    seq = str(next(_seq))
    nonce = str(int.from_bytes(os.urandom(4), "big"))
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    for part in (key, timestamp, seq, nonce):
        mac.update(part.encode())
    mac.update(body)
    signature = base64.urlsafe_b64encode(mac.digest()).decode()
    session = getattr(_local, "http", None)
    if session is None:
        # Keep-alive per pool thread: the fairest way to use the bridge.
        session = _local.http = requests.Session()
    params = {"key": key, "timestamp": timestamp, "seq": seq, "nonce": nonce}
    params["signature"] = signature
    return session.post(
        url, params=params, data=body, headers={"Content-Type": "application/json"}, timeout=10
    )


@app.task(name="bench.http_publish")
def http_publish(topic: str, payload: dict[str, Any]) -> int:
    """(b): Crossbar's HTTP bridge publisher, one signed POST per event."""
    body = json.dumps({"topic": topic, "args": [payload]}).encode()
    response = _signed_post(
        os.environ["TIDINGS_BENCH_BRIDGE_URL"],
        os.environ["TIDINGS_BENCH_BRIDGE_KEY"],
        os.environ["TIDINGS_BENCH_BRIDGE_SECRET"],
        body,
    )
    response.raise_for_status()
    return 1


@app.task(name="bench.connect_publish")
def connect_publish(topic: str, payload: dict[str, Any]) -> int:
    """(c): the common mistake, a new authenticated WAMP connection for every task."""
    config = settings()
    connection = WampConnection(
        config.router_url,
        REALM,
        Credentials(BACKEND_AUTHID, "wampcra", config.require_backend_secret()),
        name="bench-per-task",
    ).start()

    async def publish_once() -> None:
        session = await connection.session()
        await session.publish(topic, payload, options=PublishOptions(acknowledge=True))

    try:
        connection.submit(asyncio.wait_for(publish_once(), 10)).result(11)
    finally:
        connection.close()
    return 1
