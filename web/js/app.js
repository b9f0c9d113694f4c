// The admin page: signs in, opens the live connection and mounts every panel.

import { $, show, toast } from "./dom.js";
import { Live } from "./live.js";
import { nameOf } from "./names.js";
import { signIn, signinError } from "./signin.js";
import { RecordPanel } from "./record.js";
import { MaintenanceModal } from "./maintenance.js";
import { PriceChart } from "./chart.js";
import { NotificationList } from "./notifications.js";
import { ChatPanel } from "./chat.js";
import * as dev from "./dev.js";

const STATE_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  "signed-out": "Signed out",
};

function wsUrl() {
  return window.tidingsUrl || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

function recordFrom(params) {
  const id = params.get("order") || "42";
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) return { entity: "order", id: 42 };
  return { entity: "order", id: /^\d{1,15}$/.test(id) ? Number(id) : id };
}

function showConnection(state, detail) {
  const indicator = $("connection");
  indicator.dataset.state = state;
  let text = STATE_TEXT[state] || state;
  if (state === "signed-out") text += `: ${detail.message || detail.reason}`;
  indicator.querySelector(".indicator-text").textContent = text;
  indicator.title = detail.reason ? `last close: ${detail.reason}` : "";
  if (state === "signed-out") signinError(`The router refused the ticket (${detail.reason}).`);
}

function showIdentity(live, session, devMode) {
  show($("who"));
  $("user-name").textContent = nameOf(live.user);
  $("session-id").textContent = `session ${session.id}`;
  $("session-id").dataset.session = String(session.id);
  document.querySelector(".who .avatar").textContent = nameOf(live.user).charAt(0);
  show($("switch-user"), devMode);
}

function mountDevButtons(live) {
  for (const part of document.querySelectorAll("[data-dev-only]")) show(part);
  $("feed-start").addEventListener("click", async () => {
    try {
      await dev.startFeed();
      toast("Demo feed started");
    } catch (error) {
      toast(`Feed not started: ${error.message}`, "error");
    }
  });
  $("notify-self").addEventListener("click", async () => {
    try {
      await dev.notifyMe(live.user, `Hello ${nameOf(live.user)}, sent at ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      toast(`Not sent: ${error.message}`, "error");
    }
  });
}

async function main() {
  const params = new URLSearchParams(location.search);
  const signin = await signIn(params);
  if (!signin) {
    $("connection").dataset.state = "signed-out";
    $("connection").querySelector(".indicator-text").textContent = "Not signed in";
    return;
  }
  const live = new Live({ url: wsUrl(), ticket: signin.ticket });
  window.tidings = live; // for the console
  live.on("state", showConnection);
  // Whether the page is caught up since its last (re)connect: for people reading the DOM.
  live.on("state", () => { $("connection").dataset.synced = "false"; });
  live.on("synced", () => { $("connection").dataset.synced = "true"; });
  live.on("gap", () => show($("reload-needed")));
  live.on("recovered", (count) => {
    if (count) toast(`Back online: ${count} missed event${count === 1 ? "" : "s"} recovered`);
  });
  $("reload-page").addEventListener("click", () => location.reload());

  new MaintenanceModal(live).mount();
  new PriceChart(live).mount();
  new RecordPanel(live, { ...recordFrom(params), devMode: signin.devMode }).mount();
  if (signin.devMode) mountDevButtons(live);

  let mounted = false;
  live.on("join", (session, details) => {
    showIdentity(live, session, signin.devMode);
    if (!mounted) {
      mounted = true; // the user is known for sure once the router accepted the ticket
      new NotificationList(live, live.user).mount();
      // The rooms are those of the ticket the router accepted: WELCOME carries its perms.
      new ChatPanel(live, details.authextra && details.authextra.perms).mount();
    }
  });
  live.start();
}

main().catch((error) => {
  console.error("tidings: the page could not start", error);
  signinError(`The page could not start: ${error.message}`);
});
