"""How a backend or test session authenticates: WAMP-CRA with a secret, or WAMP-Ticket."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autobahn.wamp import auth as wamp_auth


class JoinRefused(RuntimeError):
    """The router asked for an authentication method these credentials cannot answer."""


@dataclass(frozen=True)
class Credentials:
    """`secret` may be a callable, so that one-time tickets are fetched anew per connection."""

    authid: str | None
    method: str  # "wampcra" or "ticket"
    secret: str | Callable[[], str]

    def current_secret(self) -> str:
        return self.secret() if callable(self.secret) else self.secret

    def answer(self, challenge: Any) -> str:
        """The response to the router's CHALLENGE."""
        secret = self.current_secret()
        if challenge.method == "wampcra":
            key: str | bytes = secret
            if "salt" in challenge.extra:
                key = wamp_auth.derive_key(
                    secret,
                    challenge.extra["salt"],
                    challenge.extra.get("iterations", 1000),
                    challenge.extra.get("keylen", 32),
                )
            signature = wamp_auth.compute_wcs(key, challenge.extra["challenge"])
            return signature.decode("ascii") if isinstance(signature, bytes) else signature
        if challenge.method == "ticket":
            return secret
        raise JoinRefused(f"router asked for unsupported auth method {challenge.method!r}")
