"""The data behind the admin page's demo: users, an editable record store, and a price walk."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

USERS: dict[str, str] = {"1": "Alice", "2": "Bob", "3": "Carol", "4": "Dave"}
# Every demo user may view every demo entity.
ENTITIES: tuple[str, ...] = ("order",)
PERMS: tuple[str, ...] = tuple(f"entity:{entity}:view" for entity in ENTITIES)
# Chat rooms and their members: everyone is in "lobby"; Carol is not in "ops".
ROOMS: dict[str, tuple[str, ...]] = {"lobby": ("1", "2", "3", "4"), "ops": ("1", "2", "4")}


def perms_of(user: str) -> list[str]:
    """What a demo user's ticket holds: every entity, and the rooms they are a member of."""
    rooms = [f"chat:{room}:join" for room, members in ROOMS.items() if user in members]
    return [*PERMS, *rooms]


RECORD_FIELDS: tuple[str, ...] = ("customer", "status", "total", "note")
STATUSES: tuple[str, ...] = ("new", "processing", "shipped", "closed")
_DEFAULT_RECORD = {"customer": "Northwind Traders", "status": "new", "total": "1250.00", "note": ""}
MAX_FIELD_CHARS = 500


class InvalidRecord(ValueError):
    """The values sent for a record cannot be saved."""


class RecordStore:
    """Demo records in memory; every record starts from the same values."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()

    def get(self, entity: str, record_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._records.get((entity, record_id), _DEFAULT_RECORD))

    def save(self, entity: str, record_id: str, values: object) -> list[str]:
        """Store the values; returns the names of the fields that changed."""
        clean = _clean(values)
        with self._lock:
            current = self._records.get((entity, record_id), _DEFAULT_RECORD)
            changed = [
                name for name in RECORD_FIELDS if clean.get(name, current[name]) != current[name]
            ]
            self._records[(entity, record_id)] = {**current, **clean}
        return changed


def _clean(values: object) -> dict[str, str]:
    if not isinstance(values, dict):
        raise InvalidRecord("values must be an object of field names to strings")
    clean: dict[str, str] = {}
    for name, value in values.items():
        if name not in RECORD_FIELDS:
            raise InvalidRecord(f"unknown field {name!r}; fields are {', '.join(RECORD_FIELDS)}")
        if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
            raise InvalidRecord(f"{name} must be a string of at most {MAX_FIELD_CHARS} characters")
        clean[name] = value.strip()
    if "status" in clean and clean["status"] not in STATUSES:
        raise InvalidRecord(f"status must be one of {', '.join(STATUSES)}")
    if "total" in clean:
        try:
            clean["total"] = f"{float(clean['total']):.2f}"
        except ValueError:
            raise InvalidRecord("total must be a number") from None
    return clean


@dataclass
class PriceWalk:
    """A stock price that wanders: the demo feed's data."""

    symbol: str = "ACME"
    price: float = 100.0
    rng: random.Random = field(default_factory=random.Random)

    def step(self) -> dict[str, object]:
        self.price = max(1.0, self.price * (1 + self.rng.gauss(0, 0.01)))
        return {"symbol": self.symbol, "price": round(self.price, 2)}
