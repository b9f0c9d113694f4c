"""What several commands share: the one-line error, the broker and the router as a client."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tidings.errors import TidingsError
from tidings.names import BACKEND_AUTHID, REALM, TASK_QUEUE
from tidings.settings import Settings


class CliError(TidingsError):
    """A mistake the user can fix; printed as one line, without a traceback."""


def venv_bin(name: str) -> str:
    """A command installed beside this Python (the project's `.venv/bin`)."""
    return str(Path(sys.executable).parent / name)


def seconds(text: str) -> float:
    """An argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 to 3600)")
    return value


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}") from None


def broker_where(settings: Settings) -> str:
    """The broker's URL without its password."""
    from kombu import Connection

    return str(Connection(settings.broker_url).as_uri())


def send_task(settings: Settings, name: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    """Enqueue a tidings task on the durable `tidings` queue; fails fast if the broker is down."""
    from celery import Celery
    from kombu.exceptions import OperationalError

    app = Celery("tidings-cli", broker=settings.broker_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            result = app.send_task(name, args, kwargs, queue=TASK_QUEUE, connection=conn)
    except (OperationalError, OSError) as exc:
        raise CliError(f"cannot reach the broker at {broker_where(settings)}: {exc}") from None
    return str(result.id)


def call_router(settings: Settings, procedure: str, *args: Any, timeout: float = 5.0) -> Any:
    """Call a router-side procedure as the backend; fails fast if the router is down."""
    from publisher.connection import WampConnection
    from publisher.credentials import Credentials

    credentials = Credentials(BACKEND_AUTHID, "wampcra", settings.require_backend_secret())
    connection = WampConnection(settings.router_url, REALM, credentials, name="tidings-cli")

    async def ask() -> Any:
        session = await connection.session()
        return await session.call(procedure, *args)

    try:
        return connection.submit(asyncio.wait_for(ask(), timeout)).result(timeout + 1)
    except TimeoutError:
        why = f" ({connection.last_error})" if connection.last_error else ""
        raise CliError(f"no answer from the router at {settings.router_url}{why}") from None
    except Exception as exc:
        raise CliError(f"the router refused {procedure}: {exc}") from None
    finally:
        connection.close()
