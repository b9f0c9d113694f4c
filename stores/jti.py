"""Where used ticket ids are remembered: in memory, or in Redis to span routers and restarts."""

from __future__ import annotations

import threading
import time

from tidings.tickets import JtiStore


class MemoryJtiStore:
    """Process-local store; forgets on restart. Bounded by expiry sweeps."""

    blocking = False

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def claim(self, jti: str, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if now >= self._next_sweep:
                self._expiry = {k: v for k, v in self._expiry.items() if v > now}
                self._next_sweep = now + 30
            expires = self._expiry.get(jti)
            if expires is not None and expires > now:
                return False
            self._expiry[jti] = now + ttl
            return True


class RedisJtiStore:
    """Shared store: `SET NX EX` makes the first use win across routers."""

    blocking = True  # a network round trip: not on an event loop

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def claim(self, jti: str, ttl: float) -> bool:
        return bool(self._redis.set(f"tidings:jti:{jti}", b"1", nx=True, ex=max(1, int(ttl) + 1)))


def make_store(redis_url: str | None) -> JtiStore:
    return RedisJtiStore(redis_url) if redis_url else MemoryJtiStore()
