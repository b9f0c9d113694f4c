"""Unit tests: no broker, no router, no child process; the whole folder runs in seconds."""

import txaio

# autobahn binds txaio's functions when its modules are first imported; the
# backend client runs on asyncio, so select it before any test imports them.
txaio.use_asyncio()
