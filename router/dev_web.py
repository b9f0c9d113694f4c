"""The development-only HTTP endpoint of the admin page (`/dev/...`); 404 unless TIDINGS_DEV=1.

The router serves it as a `wsgi` path service. It plays the part of the
application that embeds tidings: it issues tickets to demo users, keeps a demo
record and enqueues Celery tasks exactly as an application would.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from router import demo
from tidings import catalogue, tickets
from tidings.names import ENTITY_CHANGED_TASK, PUBLISH_TASK, TASK_QUEUE
from tidings.settings import Settings

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Handler = Callable[[dict[str, Any], "re.Match[str]"], tuple[int, dict[str, Any]]]

MAX_BODY_BYTES = 16384
MAX_FEED_COUNT = 600
MIN_FEED_INTERVAL = 0.1
PRICE_TOPIC = "tidings.demo.prices"
_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    415: "415 Unsupported Media Type",
    503: "503 Service Unavailable",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


records = demo.RecordStore()


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The router process's settings, read on the first request."""
    return Settings.from_environ(os.environ)


# -- enqueueing, as any application does ------------------------------------------
@lru_cache(maxsize=1)
def _celery() -> Any:
    from celery import Celery

    return Celery("tidings-dev", broker=settings().broker_url, set_as_current=False)


def enqueue(name: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> None:
    """Send a tidings task to the `tidings` queue; HttpError 503 if the broker is down."""
    try:
        _celery().send_task(
            name,
            args,
            kwargs or {},
            queue=TASK_QUEUE,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except Exception as exc:
        log.warning("cannot enqueue %s: %s", name, exc)
        raise HttpError(503, f"cannot reach the broker to enqueue {name}: {exc}") from None


class PriceFeed:
    """Enqueues `tidings.publish` price ticks at a bounded rate; one run at a time."""

    def __init__(self) -> None:
        self.walk = demo.PriceWalk()
        self.left = 0
        self._lock = threading.Lock()

    def start(self, count: int, interval: float) -> int:
        with self._lock:
            idle = self.left == 0
            self.left = max(self.left, count)
        if idle:
            threading.Thread(
                target=self._run, args=(interval,), name="demo-feed", daemon=True
            ).start()
        return self.left

    def _run(self, interval: float) -> None:
        while self.left > 0:
            tick = {**self.walk.step(), "at": datetime.now(UTC).isoformat(timespec="milliseconds")}
            try:
                enqueue(PUBLISH_TASK, [PRICE_TOPIC, tick])
            except HttpError:
                self.left = 0
                return
            with self._lock:
                self.left -= 1
            time.sleep(interval)


feed = PriceFeed()


# -- routes ----------------------------------------------------------------------------
def _user(value: Any) -> str:
    user = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not _ID.match(user):
        raise HttpError(400, "user must be an id of letters, digits, '_' or '-'")
    return user


def users(body: dict[str, Any], match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    listed = [{"id": uid, "name": name} for uid, name in demo.USERS.items()]
    return 200, {"users": listed, "perms": list(demo.PERMS), "rooms": demo.ROOMS}


def _demo_user(value: Any) -> str:
    user = _user(value)
    if user not in demo.USERS:
        raise HttpError(403, f"tickets only for the demo users {', '.join(demo.USERS)}")
    return user


def ticket(body: dict[str, Any], match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    user = _demo_user(body.get("user"))
    token = tickets.issue(settings().require_secret(), user, demo.perms_of(user))
    return 200, {"ticket": token, "user": user, "name": demo.USERS.get(user, f"User {user}")}


def get_record(body: dict[str, Any], match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    entity, record_id = match["entity"], match["id"]
    return 200, {"entity": entity, "id": record_id, "values": records.get(entity, record_id)}


def save_record(body: dict[str, Any], match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    entity, record_id = match["entity"], match["id"]
    user = _user(body.get("user"))
    session = body.get("session")
    if session is not None and (isinstance(session, bool) or not isinstance(session, int)):
        raise HttpError(400, "session must be the page's WAMP session id (an integer)")
    try:
        fields = records.save(entity, record_id, body.get("values"))
    except demo.InvalidRecord as exc:
        raise HttpError(400, str(exc)) from None
    if fields:
        key: int | str = int(record_id) if record_id.isdigit() else record_id
        enqueue(
            ENTITY_CHANGED_TASK,
            [entity, key],
            {"action": "updated", "changed_by": user, "fields": fields, "origin_session": session},
        )
    return 200, {"values": records.get(entity, record_id), "fields": fields}


def notify(body: dict[str, Any], match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    user = _user(body.get("user"))
    text = body.get("text")
    if not isinstance(text, str) or not 0 < len(text) <= 200:
        raise HttpError(400, "text must be a string of 1 to 200 characters")
    user = _demo_user(user)
    enqueue(PUBLISH_TASK, [catalogue.user_topic(user), {"title": "Demo", "text": text}])
    return 200, {"queued": True}


def start_feed(body: dict[str, Any], match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    count, interval = body.get("count", 120), body.get("interval", 0.5)
    if not isinstance(count, int) or not 0 < count <= MAX_FEED_COUNT:
        raise HttpError(400, f"count must be 1 to {MAX_FEED_COUNT}")
    if not isinstance(interval, int | float) or not MIN_FEED_INTERVAL <= interval <= 60:
        raise HttpError(400, f"interval must be {MIN_FEED_INTERVAL} to 60 s")
    return 200, {"left": feed.start(count, float(interval)), "topic": PRICE_TOPIC}


_RECORD = r"/records/(?P<entity>[a-z_]{1,32})/(?P<id>[A-Za-z0-9_\-]{1,64})"
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"^/users$"), users),
    ("POST", re.compile(r"^/ticket$"), ticket),
    ("GET", re.compile(f"^{_RECORD}$"), get_record),
    ("POST", re.compile(f"^{_RECORD}$"), save_record),
    ("POST", re.compile(r"^/notify$"), notify),
    ("POST", re.compile(r"^/feed$"), start_feed),
]


def _dispatch(environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if not settings().dev:
        raise HttpError(404, "not found")
    _refuse_cross_origin(environ)
    path, method = environ.get("PATH_INFO") or "/", environ.get("REQUEST_METHOD", "GET")
    media_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    if method == "POST" and media_type != "application/json":
        # A form or text/plain POST is what another site can send without asking.
        raise HttpError(415, "send JSON: Content-Type application/json")
    allowed = False
    for route_method, pattern, handler in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        allowed = True
        if route_method == method:
            return handler(_body(environ) if method == "POST" else {}, match)
    raise HttpError(405 if allowed else 404, "method not allowed" if allowed else "not found")


def _refuse_cross_origin(environ: dict[str, Any]) -> None:
    """Only the page's own origin (or a tool that names none) may use the endpoint, and
    only under a loopback name: a page of another site that made its name point here
    (DNS rebinding) would otherwise pass as the page's own."""
    host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        raise HttpError(403, "the development endpoint answers only on 127.0.0.1 or localhost")
    origin = environ.get("HTTP_ORIGIN")
    own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
    site = environ.get("HTTP_SEC_FETCH_SITE", "same-origin")
    if (origin is not None and origin != own) or site not in ("same-origin", "none"):
        raise HttpError(403, "requests from other sites are refused")


def _body(environ: dict[str, Any]) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if not 0 <= length <= MAX_BODY_BYTES:
        raise HttpError(400, f"the body must be JSON of at most {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(environ["wsgi.input"].read(length) or b"{}")
    except ValueError:
        raise HttpError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI application the router mounts at /dev."""
    try:
        status, payload = _dispatch(environ)
    except HttpError as exc:
        status, payload = exc.status, {"error": str(exc)}
    except Exception:
        log.exception("dev endpoint failed")
        status, payload = 503, {"error": "the dev endpoint failed; see the router log"}
    data = json.dumps(payload).encode()
    start_response(
        _STATUS.get(status, f"{status} Error"),
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]
