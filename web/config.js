// Hooks for the application that embeds this page; loaded before the page's modules.
//
// Outside development mode the page signs in with a ticket from your
// application. Tickets are one-time: the page calls the hook again on every
// (re)connect. Example, with an endpoint of your app that issues tickets
// (see "In the browser" in the README):
//
// window.tidingsTicket = async () => {
//   const response = await fetch("/tidings/ticket", { method: "POST", credentials: "include" });
//   if (!response.ok) throw new Error(`ticket endpoint answered ${response.status}`);
//   return (await response.json()).ticket;
// };
//
// Optional: display names for user ids (presence, "changed by").
// window.tidingsUserNames = { "7": "Alice", "8": "Bob" };
