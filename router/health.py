"""`GET /health` on the router's web port, for load balancers: 200 when it can serve, else 503.

Ready means: every router-side component has joined and can serve
(router.meters.readiness), and in shared mode Redis answers. The answer
says why in a few words and nothing internal: `{"ok": true}` or
`{"ok": false, "why": ["history: starting"]}`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from router import meters
from tidings.settings import Settings

# Seconds a Redis answer is trusted: a load balancer asking every second
# costs Redis one ping a second, not one per check.
REDIS_FRESH = 1.0


class Health(Resource):
    """Crossbar builds it from `.crossbar/config.json` (path type "resource")."""

    isLeaf = True

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        super().__init__()
        settings = Settings.from_environ(os.environ)
        self._redis: Any = None
        if settings.redis_url:
            import redis

            self._redis = redis.Redis.from_url(
                settings.redis_url, socket_timeout=1, socket_connect_timeout=1
            )
        self._redis_ok: tuple[float, str | None] = (0.0, None)

    def render_GET(self, request: Any) -> Any:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        checked, why = self._redis_ok
        if self._redis is None or time.monotonic() - checked < REDIS_FRESH:
            return self._answer(request, why)
        pinged = deferToThread(self._ping)
        pinged.addCallback(lambda why: self._answer(request, why, finish=True))
        return NOT_DONE_YET

    def render_HEAD(self, request: Any) -> Any:
        return self.render_GET(request)

    def _ping(self) -> str | None:
        try:
            self._redis.ping()
            why = None
        except Exception:
            why = "redis: unreachable"
        self._redis_ok = (time.monotonic(), why)
        return why

    def _answer(self, request: Any, redis_why: str | None, finish: bool = False) -> bytes:
        reasons = meters.readiness() + ([redis_why] if redis_why else [])
        request.setResponseCode(503 if reasons else 200)
        body = json.dumps({"ok": False, "why": reasons} if reasons else {"ok": True}).encode()
        if finish:
            if not request.finished and not getattr(request, "_disconnected", False):
                request.write(body if request.method != b"HEAD" else b"")
                request.finish()
            return b""
        return body
