"""Fixtures of the operations tests: the fault tests' vhost, workers and counting subscribers."""

from __future__ import annotations

from tests.faults.conftest import start_worker, subscribe, vhost

__all__ = ["start_worker", "subscribe", "vhost"]
