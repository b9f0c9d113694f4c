"""Who is on which record, through which sessions: the bookkeeping behind presence."""

from __future__ import annotations


class PresenceBook:
    """Which users are on which record topic, through which sessions.

    A user is on a record while at least one of their sessions is subscribed
    to it; the transitions (first session in, last session out) are what the
    others hear about.
    """

    def __init__(self) -> None:
        # topic → user → sessions, and session → subscription → (topic, user)
        self._records: dict[str, dict[str, set[int]]] = {}
        self._subscriptions: dict[int, dict[int, tuple[str, str]]] = {}

    def join(self, session: int, subscription: int, topic: str, user: str) -> bool:
        """Record a subscription; True if the user was not on the record before."""
        self._subscriptions.setdefault(session, {})[subscription] = (topic, user)
        users = self._records.setdefault(topic, {})
        first = user not in users
        users.setdefault(user, set()).add(session)
        return first

    def leave(self, session: int, subscription: int) -> tuple[str, str] | None:
        """Forget a subscription; (topic, user) if that user is now off the record."""
        subs = self._subscriptions.get(session)
        if subs is None or subscription not in subs:
            return None  # not a record subscription, or already gone with its session
        topic, user = subs.pop(subscription)
        if not subs:
            del self._subscriptions[session]
        return (topic, user) if self._drop(topic, user, session) else None

    def drop_session(self, session: int) -> list[tuple[str, str]]:
        """Forget every subscription of a session that left; the (topic, user) now off."""
        gone = []
        for topic, user in self._subscriptions.pop(session, {}).values():
            if self._drop(topic, user, session):
                gone.append((topic, user))
        return gone

    def counts(self) -> tuple[int, int]:
        """(users on at least one record, records with at least one user)."""
        return len({user for users in self._records.values() for user in users}), len(self._records)

    def editors(self, topic: str) -> list[str]:
        return sorted(self._records.get(topic, {}))

    def __len__(self) -> int:
        return len(self._records)

    def _drop(self, topic: str, user: str, session: int) -> bool:
        users = self._records.get(topic, {})
        sessions = users.get(user)
        if sessions is None:
            return False
        sessions.discard(session)
        if sessions:
            return False
        del users[user]
        if not users:
            del self._records[topic]
        return True
