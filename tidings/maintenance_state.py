"""Maintenance mode's state: what a valid one looks like, and the state when it was never set."""

from __future__ import annotations

from typing import Any

OFF: dict[str, Any] = {"enabled": False, "message": None, "by": None, "at": None}


def valid(state: Any) -> bool:
    return isinstance(state, dict) and isinstance(state.get("enabled"), bool)
