"""Presence over several router nodes, in Redis: who is on which record, from every node.

Each node records its browsers' record subscriptions; a user is on a record
while any session of theirs on any node is, and the transitions (first in,
last out) are what the others hear, on every node: a node announces them on a
Redis channel that every node listens to (at most once; `editors()` answers
from the shared state whatever was missed). Each node keeps a heartbeat key
alive; once a node's key has expired, another node takes its entries away
and announces that its users left.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

CHANNEL = "tidings:presence"
NODES = "tidings:nodes"

# KEYS: members (member -> user), users (user -> count), the node's entries.
# ARGV: member, user, entry. Returns 1 when the user was on no session of the record before.
_JOIN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SADD', KEYS[3], ARGV[3])
if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then return 1 end
return 0
"""

# KEYS: members, users, the node's entries. ARGV: member, entry.
# Returns the user when it was their last session on the record, else false.
_LEAVE = """
local user = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[2])
if not user then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
  redis.call('HDEL', KEYS[2], user)
  return user
end
return false
"""

# KEYS: the nodes set, the node's entries, its heartbeat. ARGV: node, "force".
# Takes a node's entries away once its heartbeat is gone (or at its own restart);
# returns {topic, user, ...} for each user now off a record. One caller wins.
_REAP = """
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[3]) == 1 then return {} end
if ARGV[2] ~= 'force' and redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return {} end
local gone = {}
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local tab = string.find(entry, '\\t', 1, true)
  local topic = string.sub(entry, 1, tab - 1)
  local member = string.sub(entry, tab + 1)
  local members = 'tidings:p:{' .. topic .. '}:m'
  local users = 'tidings:p:{' .. topic .. '}:u'
  local user = redis.call('HGET', members, member)
  if user then
    redis.call('HDEL', members, member)
    if redis.call('HINCRBY', users, user, -1) <= 0 then
      redis.call('HDEL', users, user)
      table.insert(gone, topic)
      table.insert(gone, user)
    end
  end
end
redis.call('DEL', KEYS[2])
return gone
"""


def _record_keys(topic: str) -> list[str]:
    return [f"tidings:p:{{{topic}}}:m", f"tidings:p:{{{topic}}}:u"]


class RedisPresence:
    """The shared presence of one node (blocking calls: run them off an event loop)."""

    blocking = True

    def __init__(self, url: str, node: str, heartbeat: float = 3.0, dead_after: int = 10) -> None:
        import redis

        self.node = node
        self.heartbeat_every = heartbeat
        self.dead_after = dead_after
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._url = url
        self._join = self._redis.register_script(_JOIN)
        self._leave = self._redis.register_script(_LEAVE)
        self._reap = self._redis.register_script(_REAP)
        # (session, subscription) -> topic, for this node's own sessions.
        self._mine: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Redis (node {self.node})"

    # -- this node's sessions ------------------------------------------------
    def join(self, session: int, subscription: int, topic: str, user: str) -> bool:
        """Record a subscription; True if the user was on the record on no node before."""
        member = self._member(session, subscription)
        with self._lock:
            self._mine[(session, subscription)] = topic
        entry = f"{topic}\t{member}"
        keys = [*_record_keys(topic), self._entries(self.node)]
        return bool(self._join(keys, [member, user, entry]))

    def leave(self, session: int, subscription: int) -> tuple[str, str] | None:
        """Forget a subscription; (topic, user) if that user is now off the record."""
        with self._lock:
            topic = self._mine.pop((session, subscription), None)
        if topic is None:
            return None
        return self._leave_topic(topic, self._member(session, subscription))

    def drop_session(self, session: int) -> list[tuple[str, str]]:
        """Forget every subscription of a session that left; the (topic, user) now off."""
        with self._lock:
            mine = [key for key in self._mine if key[0] == session]
            topics = [(key, self._mine.pop(key)) for key in mine]
        gone = []
        for (_, subscription), topic in topics:
            left = self._leave_topic(topic, self._member(session, subscription))
            if left is not None:
                gone.append(left)
        return gone

    def editors(self, topic: str) -> list[str]:
        return sorted(_text(user) for user in self._redis.hkeys(_record_keys(topic)[1]))

    # -- nodes ------------------------------------------------------------------
    def start(self) -> list[tuple[str, str]]:
        """At this node's start: what it held before a restart is gone; heartbeat."""
        gone = self._reaped(self.node, force=True)
        self.beat()
        return gone

    def beat(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._heartbeat(self.node), b"1", ex=self.dead_after)
        pipe.sadd(NODES, self.node)
        pipe.execute()

    def reap(self) -> list[tuple[str, str]]:
        """Take the entries of nodes whose heartbeat stopped; the (topic, user) now off."""
        gone = []
        for raw in self._redis.smembers(NODES):
            node = _text(raw)
            if node != self.node:
                gone += self._reaped(node, force=False)
        return gone

    # -- announcements ------------------------------------------------------------
    def announce(self, topic: str, user: str, state: str) -> None:
        message = json.dumps({"topic": topic, "user": user, "state": state, "node": self.node})
        self._redis.publish(CHANNEL, message)

    def listen(self, hear: Callable[[str, str, str], None], stop: threading.Event) -> None:
        """Call `hear(topic, user, state)` for every announcement of any node, until `stop`;
        reconnects by itself. Runs on a thread of its own."""
        import redis

        while not stop.is_set():
            try:
                client = redis.Redis.from_url(self._url, socket_connect_timeout=2)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                while not stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        heard = json.loads(message["data"])
                        hear(heard["topic"], heard["user"], heard["state"])
            except Exception as exc:
                log.warning("presence announcements: %s; listening again in 1 s", exc)
                stop.wait(1.0)

    # -- keys ----------------------------------------------------------------------
    def _leave_topic(self, topic: str, member: str) -> tuple[str, str] | None:
        keys = [*_record_keys(topic), self._entries(self.node)]
        user = self._leave(keys, [member, f"{topic}\t{member}"])
        return (topic, _text(user)) if user else None

    def _reaped(self, node: str, force: bool) -> list[tuple[str, str]]:
        keys = [NODES, self._entries(node), self._heartbeat(node)]
        flat = [_text(item) for item in self._reap(keys, [node, "force" if force else ""])]
        return list(zip(flat[::2], flat[1::2], strict=True))

    def _member(self, session: int, subscription: int) -> str:
        return f"{self.node}/{session}/{subscription}"

    @staticmethod
    def _entries(node: str) -> str:
        return f"tidings:p:node:{node}"

    @staticmethod
    def _heartbeat(node: str) -> str:
        return f"tidings:node:{node}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
