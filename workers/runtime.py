"""What one worker process shares: its settings, its LetterBox and its ledger.

Nothing is read at import: the settings come from the environment on first
use, once per process.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from tidings.settings import Settings
from workers.ledger import Ledger
from workers.letterbox import LetterBox, confirming


@lru_cache(maxsize=1)
def settings() -> Settings:
    """This worker process's settings, read from the environment on first use."""
    return Settings.from_environ(os.environ)


# Dead letters and hand-backs, and the ledger that settles every message the
# consumer publishes.
letters = LetterBox(lambda: confirming(settings().broker_url)())
ledger = Ledger(letters)


def open_ledger(hub: Any) -> Ledger:
    """Called at every consumer (re)start with its event loop."""
    ledger.max_redeliveries = settings().max_redeliveries
    ledger.use_hub(hub)
    return ledger
