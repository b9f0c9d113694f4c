"""Who a router session is (authid, role, permissions), for the router-side components."""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from autobahn.wamp.exception import ApplicationError

from tidings.errors import INTERNAL, INVALID_ARGUMENT, NOT_AUTHORIZED, TidingsError
from tidings.names import BACKEND_ROLE

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Principal:
    session: int
    authid: str
    role: str
    perms: frozenset[str]

    @property
    def is_backend(self) -> bool:
        return self.role == BACKEND_ROLE


def principal_of(details: dict[str, Any]) -> Principal | None:
    """From session details as `wamp.session.on_join` and `wamp.session.get` give them."""
    session = details.get("session")
    if not isinstance(session, int):
        return None
    extra = details.get("authextra")
    perms = extra.get("perms") if isinstance(extra, dict) else None
    return Principal(
        session=session,
        authid=str(details.get("authid") or ""),
        role=str(details.get("authrole") or ""),
        perms=frozenset(p for p in perms or () if isinstance(p, str)),
    )


class SessionDirectory:
    """The principal of each session on the realm, kept while the session lasts.

    Filled from `wamp.session.on_join` (no round trip on the common path), with
    `wamp.session.get` for sessions that joined before this component; emptied
    on `wamp.session.on_leave`, so it holds only sessions that are connected.
    """

    def __init__(self, session: Any) -> None:
        self._session = session
        self._known: dict[int, Principal] = {}

    async def attach(self) -> None:
        await self._session.subscribe(self._on_join, "wamp.session.on_join")
        await self._session.subscribe(self._on_leave, "wamp.session.on_leave")

    def __len__(self) -> int:
        return len(self._known)

    def _on_join(self, details: dict[str, Any]) -> None:
        principal = principal_of(details) if isinstance(details, dict) else None
        if principal is not None:
            self._known[principal.session] = principal

    def _on_leave(self, session_id: int) -> None:
        self._known.pop(session_id, None)

    async def get(self, session_id: int) -> Principal | None:
        """The session's principal, or None once it has left."""
        known = self._known.get(session_id)
        if known is not None:
            return known
        try:
            details = await self._session.call("wamp.session.get", session_id)
        except ApplicationError:
            return None
        principal = principal_of(details) if isinstance(details, dict) else None
        if principal is not None:
            self._known[session_id] = principal
        return principal

    async def caller(self, details: Any) -> Principal:
        """The principal of a procedure's caller; the router must disclose callers."""
        session_id = getattr(details, "caller", None)
        principal = await self.get(session_id) if isinstance(session_id, int) else None
        if principal is None:
            # Without disclosure there is no way to check permissions: refuse.
            log.warning("call without a disclosed caller; the authorizer must disclose callers")
            raise ApplicationError(NOT_AUTHORIZED, "the caller is unknown")
        return principal


def browser_errors(
    procedure: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """A procedure browsers call: they see `tidings.error.*` only, never an internal error."""

    signature = inspect.signature(procedure)

    @functools.wraps(procedure)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            signature.bind(*args, **kwargs)
        except TypeError:
            raise ApplicationError(INVALID_ARGUMENT, "wrong arguments") from None
        if not _encodable((args[1:], {k: v for k, v in kwargs.items() if k != "details"})):
            # A lone surrogate: no answer that repeats it could be sent back.
            raise ApplicationError(INVALID_ARGUMENT, "text must be valid Unicode")
        try:
            return await procedure(*args, **kwargs)
        except ApplicationError:
            raise
        except TidingsError as exc:
            raise ApplicationError(exc.uri, str(exc)) from None
        except Exception:
            log.exception("%s failed", procedure.__name__)
            raise ApplicationError(INTERNAL, "the server could not answer; try again") from None

    return wrapper


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode()
    except (UnicodeEncodeError, ValueError):
        return False
    return True


def require_name(value: Any, what: str) -> str:
    """A topic component from a browser: letters, digits, '_' or '-' (as in the catalogue)."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text or len(text) > 64 or not _is_name(text):
        raise ApplicationError(INVALID_ARGUMENT, f"{what} must be letters, digits, '_' or '-'")
    return text


def _is_name(text: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c in "_-") for c in text)
