"""Everything that speaks WAMP from the server side; the rest of tidings calls `publish()`.

Imports are lazy: the router loads modules of this package (the
authenticator) under Twisted, and the asyncio Publisher must not be imported
there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from publisher.publisher import (
        Publisher,
        PublishError,
        PublishTimeout,
        get_publisher,
        publish,
    )

__all__ = ["PublishError", "PublishTimeout", "Publisher", "get_publisher", "publish"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from publisher import publisher as _publisher

        return getattr(_publisher, name)
    raise AttributeError(f"module 'publisher' has no attribute {name!r}")
