"""The asyncio client side: each worker process's one long-lived, acknowledged WAMP session.

The rest of tidings calls `publish(topic, payload)` or `Publisher.publish_async`;
the WAMP details stay in here.
"""

from __future__ import annotations

from publisher.publisher import Publisher, get_publisher, publish
from tidings.errors import PublishError, PublishRefused, PublishTimeout

__all__ = [
    "PublishError",
    "PublishRefused",
    "PublishTimeout",
    "Publisher",
    "get_publisher",
    "publish",
]
