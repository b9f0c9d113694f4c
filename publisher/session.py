"""The backend's WAMP session: joins with its credentials and reports to its connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.wamp.exception import TransportLost
from autobahn.wamp.types import ComponentConfig

from publisher import rawsocket
from publisher.credentials import Credentials


class Owner(Protocol):
    """What a session reports to (publisher.connection.WampConnection)."""

    async def _joined_session(self, session: Session, details: Any) -> None: ...

    def _left_session(self, session: Session, details: Any) -> None: ...

    def _disconnected_session(self, session: Session) -> None: ...


class Session(ApplicationSession):  # type: ignore[misc]
    def __init__(self, realm: str, credentials: Credentials, owner: Owner) -> None:
        super().__init__(ComponentConfig(realm=realm))
        self._credentials = credentials
        self._owner = owner
        self.quick = rawsocket.QuickPublishes()

    def publish_quick(
        self,
        topic: str,
        payload: Any,
        options: dict[str, Any],
        done: Callable[[BaseException | None], None],
    ) -> bool:
        """An acknowledged PUBLISH without autobahn's per-message objects (publisher.rawsocket)."""
        return rawsocket.publish_quick(self, topic, payload, options, done)

    def onConnect(self) -> None:
        self.join(
            self.config.realm,
            authmethods=[self._credentials.method],
            authid=self._credentials.authid,
        )

    def onChallenge(self, challenge: Any) -> str:
        return self._credentials.answer(challenge)

    async def onJoin(self, details: Any) -> None:
        await self._owner._joined_session(self, details)

    def onLeave(self, details: Any) -> None:
        self._owner._left_session(self, details)
        self.disconnect()

    def onDisconnect(self) -> None:
        self._owner._disconnected_session(self)
        # Fail requests still awaiting the router's reply with TransportLost
        # (onLeave above does not): otherwise a publish in flight when the
        # router went away would wait forever instead of going out again on
        # the next session.
        self.quick.fail_all(TransportLost())
        super().onDisconnect()
