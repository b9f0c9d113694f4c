"""An application's own procedure for browsers, offered through tidings (autobahn, asyncio).

The catalogue declares it, with the permission a browser's ticket must hold:
`{"name": "shop.orders.reserve", "permission": "order:reserve"}`. The router
lets only such browsers call it; this backend session registers it and learns
who calls from the router, never from the arguments.

    TIDINGS_BACKEND_SECRET=... .venv/bin/python docs/examples/python/reserve_procedure.py

(next to `make run`, the development secret: tidings-dev-backend-secret-not-for-production)
"""

import os

from autobahn.asyncio.component import Component, run
from autobahn.wamp.types import RegisterOptions

component = Component(
    transports=[
        {
            "type": "rawsocket",
            # As tidings reads it: TIDINGS_ROUTER_URL, else the local TIDINGS_BACKEND_PORT.
            "url": os.environ.get("TIDINGS_ROUTER_URL")
            or f"rs://127.0.0.1:{os.environ.get('TIDINGS_BACKEND_PORT', '8081')}",
            "serializer": "msgpack",
        }
    ],
    realm="tidings",
    authentication={
        "wampcra": {"authid": "tidings-backend", "secret": os.environ["TIDINGS_BACKEND_SECRET"]}
    },
)


@component.on_join
async def offer(session, details):
    async def reserve(order_id, quantity=1, details=None):
        # The caller's user id and ticket permissions, as the router knows them.
        caller = await session.call("wamp.session.get", details.caller)
        perms = caller["authextra"]["perms"]
        return {
            "order_id": order_id,
            "quantity": quantity,
            "reserved_by": details.caller_authid,
            "rush": "order:rush" in perms,
        }

    await session.register(
        reserve, "shop.orders.reserve", options=RegisterOptions(details_arg="details")
    )
    print("registered shop.orders.reserve", flush=True)


if __name__ == "__main__":
    run([component], log_level="warn")
