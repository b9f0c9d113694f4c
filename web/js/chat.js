// The chat panel: the rooms the user's ticket admits to, a room's messages, who is in it, a send box.

import { $, clock, el, show } from "./dom.js";
import { nameOf } from "./names.js";

const ROOM_PERMISSION = /^chat:([A-Za-z0-9_-]{1,64}):join$/;
// The router keeps the last 50 of a room; a page open for long keeps a few more.
const MAX_MESSAGES = 200;
const RATE_LIMITED = "tidings.error.rate_limited";

const roomTopic = (room) => `tidings.chat.${room}`;
const presenceTopic = (room) => `tidings.presence.chat.${room}`;

/** The rooms that permissions name (`chat:<room>:join`), sorted. */
export function roomsOf(perms) {
  const rooms = new Set();
  for (const perm of Array.isArray(perms) ? perms : []) {
    const match = ROOM_PERMISSION.exec(perm);
    if (match) rooms.add(match[1]);
  }
  return [...rooms].sort();
}

export class ChatPanel {
  /**
   * @param {Live} live  the page's connection, already joined
   * @param {string[]} perms  the permissions of the ticket the router accepted
   */
  constructor(live, perms) {
    this.live = live;
    this.rooms = new Map(
      roomsOf(perms).map((room) => [room, { messages: [], here: new Set(), heard: null }]),
    );
    this.current = null;
    this.root = $("chat");
    this.list = $("chat-messages");
    this.form = $("chat-form");
    this.input = $("chat-input");
  }

  mount() {
    if (this.rooms.size === 0) return; // the ticket admits to no room: no panel
    show(this.root);
    const buttons = [...this.rooms.keys()].map((room) => {
      const attrs = { type: "button", class: "chat-room", test: "chat-room", "data-room": room };
      const button = el("button", attrs);
      button.textContent = room;
      return el("li", {}, button);
    });
    $("chat-rooms").append(...buttons);
    $("chat-rooms").addEventListener("click", (event) => {
      const button = event.target.closest("[data-room]");
      if (button) this.enter(button.dataset.room);
    });
    for (const room of this.rooms.keys()) {
      this.live.follow(presenceTopic(room), (event) => this.onPresence(room, event), { history: false });
      // Following a room is being in it (the others see this user there while the page is
      // open); backfill brings its last messages, and the live connection recovers the ones
      // missed while reconnecting.
      this.live.follow(roomTopic(room), (message) => this.onMessage(room, message), { backfill: true });
    }
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    // Who came and went while the connection was down was not heard: ask again.
    this.live.on("state", (state, { first }) => {
      if (state === "connected" && !first) this.refreshHere(this.current);
    });
    this.enter(this.rooms.keys().next().value);
  }

  enter(room) {
    if (!this.rooms.has(room) || room === this.current) return;
    this.current = room;
    for (const button of this.root.querySelectorAll("[data-room]")) {
      button.setAttribute("aria-pressed", String(button.dataset.room === room));
    }
    $("chat-room-name").textContent = room;
    $("chat-topic").textContent = roomTopic(room);
    $("chat-input-label").textContent = `Message to ${room}`;
    this.showError(null);
    this.list.replaceChildren(...this.rooms.get(room).messages.map((message) => this.item(message)));
    this.list.scrollTop = this.list.scrollHeight;
    this.renderEmpty();
    this.renderHere();
    this.refreshHere(room);
  }

  // -- messages ---------------------------------------------------------------------
  onMessage(room, message) {
    if (!message || typeof message.text !== "string") return;
    const { messages } = this.rooms.get(room);
    // A live message can come before the older ones from history: keep them in time order.
    let at = messages.length;
    while (at > 0 && String(messages[at - 1].at) > String(message.at)) at -= 1;
    messages.splice(at, 0, message);
    const shown = room === this.current;
    // Stay at the bottom if the reader was there; a reader scrolled up keeps their place.
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    if (shown) this.list.insertBefore(this.item(message), this.list.children[at] || null);
    if (messages.length > MAX_MESSAGES) {
      messages.shift();
      if (shown) this.list.firstElementChild.remove();
    }
    if (!shown) return;
    if (atBottom || this.mine(message)) this.list.scrollTop = this.list.scrollHeight;
    this.renderEmpty();
  }

  item(message) {
    const text = el("p", { class: "chat-text", test: "chat-text" });
    text.textContent = message.text; // a message is text, whatever it looks like
    const from = el("strong", { test: "chat-from" });
    from.textContent = nameOf(message.from);
    const when = el("time", { datetime: String(message.at || "") });
    when.textContent = clock(message.at);
    return el("li",
      { class: this.mine(message) ? "chat-message mine" : "chat-message", test: "chat-message",
        "data-event-id": message.event_id || "" },
      el("div", { class: "chat-meta" }, from, when),
      text);
  }

  mine(message) {
    return String(message.from) === String(this.live.user);
  }

  renderEmpty() {
    show($("chat-empty"), this.list.children.length === 0);
  }

  // -- who is here -------------------------------------------------------------------
  async refreshHere(room) {
    const state = this.rooms.get(room);
    // Joins and leaves heard while asking are applied again on top of the answer: the
    // answer may predate them.
    const heard = [];
    state.heard = heard;
    try {
      const users = await this.live.call("tidings.presence.here", roomTopic(room));
      if (state.heard !== heard) return; // a newer question is under way
      state.here = new Set(users.map(String));
      for (const event of heard) this.apply(state, event);
    } catch (error) {
      console.warn(`tidings: who is in ${room} is unknown`, error.error || error);
    } finally {
      if (state.heard === heard) state.heard = null;
    }
    if (room === this.current) this.renderHere();
  }

  onPresence(room, event) {
    const state = this.rooms.get(room);
    if (state.heard) state.heard.push(event);
    this.apply(state, event);
    if (room === this.current) this.renderHere();
  }

  apply(state, { user, state: change } = {}) {
    if (change === "joined") state.here.add(String(user));
    if (change === "left") state.here.delete(String(user));
  }

  renderHere() {
    const me = String(this.live.user);
    // The router tells a user nothing about themselves: this page is here.
    const others = [...this.rooms.get(this.current).here].filter((user) => user !== me);
    const items = others
      .map((user) => ({ user, name: nameOf(user) }))
      .sort((a, b) => a.name.localeCompare(b.name));
    items.unshift({ user: me, name: `${nameOf(me)} (you)` });
    $("chat-here").replaceChildren(...items.map(({ user, name }) => {
      const item = el("li", { class: "chat-member", test: "chat-member", "data-user": user });
      item.textContent = name;
      return item;
    }));
  }

  // -- sending -----------------------------------------------------------------------
  async send() {
    const text = this.input.value;
    const room = this.current;
    const button = $("chat-send");
    button.disabled = true; // one message at a time: Enter again waits for the answer
    try {
      await this.live.call("tidings.chat.send", room, text);
      // The message itself comes back on the room's topic, like everyone else's.
      if (this.input.value === text) this.input.value = "";
      this.showError(null);
    } catch (error) {
      const said = (error.args && error.args[0]) || error.error || error.message;
      const reason = String(said).replace(/\.$/, "");
      this.showError(error.error === RATE_LIMITED ? `Too fast: ${reason}.` : `Not sent: ${reason}.`);
    } finally {
      button.disabled = false;
      this.input.focus();
    }
  }

  showError(text) {
    const node = $("chat-error");
    node.textContent = text || "";
    show(node, Boolean(text));
  }
}
