// An application's own procedure for browsers, offered through tidings (autobahn-js, Node).
//
// The catalogue declares it, with the permission a browser's ticket must hold:
// {"name": "shop.orders.reserve", "permission": "order:reserve"}. The router lets
// only such browsers call it; this backend session registers it and learns who
// calls from the router, never from the arguments.
//
//   TIDINGS_BACKEND_SECRET=... node docs/examples/node/reserve_procedure.js
// (next to `make run`, the development secret: tidings-dev-backend-secret-not-for-production)
const autobahn = require("autobahn");

// As tidings reads it: TIDINGS_ROUTER_URL, else the local TIDINGS_BACKEND_PORT.
const routerUrl = process.env.TIDINGS_ROUTER_URL || `rs://127.0.0.1:${process.env.TIDINGS_BACKEND_PORT || 8081}`;
const router = new URL(routerUrl.replace(/^rs:/, "tcp:"));

const connection = new autobahn.Connection({
  transports: [{ type: "rawsocket", host: router.hostname, port: Number(router.port) }],
  realm: "tidings",
  authmethods: ["wampcra"],
  authid: "tidings-backend",
  onchallenge: (session, method, extra) => {
    let key = process.env.TIDINGS_BACKEND_SECRET;
    if (extra.salt) key = autobahn.auth_cra.derive_key(key, extra.salt, extra.iterations, extra.keylen);
    return autobahn.auth_cra.sign(key, extra.challenge);
  },
});

connection.onopen = async (session) => {
  await session.register("shop.orders.reserve", async ([orderId, quantity = 1], kwargs, details) => {
    // The caller's user id and ticket permissions, as the router knows them.
    const caller = await session.call("wamp.session.get", [details.caller]);
    return {
      order_id: orderId,
      quantity,
      reserved_by: details.caller_authid,
      rush: caller.authextra.perms.includes("order:rush"),
    };
  });
  console.log("registered shop.orders.reserve");
};

connection.open();
