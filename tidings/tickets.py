"""Browser tickets: short-lived, one-time JWTs (HS256) naming the user and their permissions."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from tidings.errors import TicketError

ALGORITHM = "HS256"
DEFAULT_TTL = 300
MAX_TTL = 3600
# Tolerated clock skew between the app that issues and the router that verifies.
LEEWAY = 5
MAX_TICKET_BYTES = 8192
# A user id is one component of a topic (`tidings.user.<id>`).
USER_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")


class JtiStore(Protocol):
    """Where used ticket ids are remembered (stores/jti.py)."""

    blocking: bool  # whether claim() waits on the network

    def claim(self, jti: str, ttl: float) -> bool:
        """Record `jti` as used for `ttl` seconds; False if it was already used."""


@dataclass(frozen=True)
class Claims:
    user: str
    perms: tuple[str, ...]
    jti: str
    expires_at: float


def issue(
    secret: str, user: str, perms: list[str] | tuple[str, ...] = (), ttl: int = DEFAULT_TTL
) -> str:
    """Sign a ticket for `user`; what any JWT library in any language can do too."""
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user),
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(16),
        "perms": list(perms),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(token: object, secret: str, used: JtiStore) -> Claims:
    """Check signature, algorithm, expiry and one-time use; raise TicketError if refused."""
    if not isinstance(token, str) or not token:
        raise TicketError("malformed", "the ticket must be a non-empty string")
    if len(token) > MAX_TICKET_BYTES:
        raise TicketError("malformed", "the ticket is too large")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TicketError("malformed", "the ticket is not a JWT") from exc
    if header.get("alg") != ALGORITHM:
        raise TicketError("malformed", f"ticket algorithm must be {ALGORITHM}")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=LEEWAY,
            options={"require": ["sub", "exp", "jti"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TicketError("expired", "the ticket has expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise TicketError("invalid", "the ticket signature is not valid") from exc
    except jwt.PyJWTError as exc:
        raise TicketError("invalid", f"the ticket is not valid: {exc}") from exc

    now = time.time()
    exp = claims["exp"]
    if not isinstance(exp, int | float) or exp > now + MAX_TTL + LEEWAY:
        raise TicketError("invalid", f"the ticket expires more than {MAX_TTL}s from now")
    iat = claims.get("iat")
    if isinstance(iat, int | float) and iat > now + LEEWAY:
        raise TicketError("invalid", "the ticket was issued in the future")
    sub, jti, perms = claims["sub"], claims["jti"], claims.get("perms", [])
    if not isinstance(sub, str) or not USER_ID.fullmatch(sub):
        raise TicketError(
            "invalid", "the ticket's sub must be a user id of letters, digits, '_' or '-'"
        )
    if not isinstance(jti, str) or not jti or len(jti) > 128:
        raise TicketError("invalid", "the ticket's jti must be a non-empty string")
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        raise TicketError("invalid", "the ticket's perms must be a list of strings")
    # Remember the jti until the ticket would have expired anyway.
    if not used.claim(jti, ttl=max(1.0, exp - now + LEEWAY)):
        raise TicketError("replayed", "the ticket was already used")
    return Claims(user=sub, perms=tuple(perms), jti=jti, expires_at=float(exp))
