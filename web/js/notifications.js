// The list of events on the user's private topic tidings.user.<id>.

import { $, clock, el, show } from "./dom.js";

const MAX_ITEMS = 50;

export class NotificationList {
  constructor(live, user) {
    this.live = live;
    this.topic = `tidings.user.${user}`;
    this.count = 0;
  }

  mount() {
    show($("notifications-card"));
    $("user-topic").textContent = this.topic;
    // backfill: a page opened now shows what the router still holds for this user.
    this.live.follow(this.topic, (event) => this.add(event), { backfill: true });
  }

  add(event) {
    const title = event.title || "Notification";
    const text = event.text || event.message || JSON.stringify(event);
    const item = el(
      "li",
      { class: "notification", test: "notification", "data-event-id": event.event_id || "" },
      el("div", { class: "notification-head" },
        el("strong", {}, title),
        el("time", {}, clock(event.at))),
      el("p", {}, text),
    );
    const list = $("notifications");
    list.prepend(item);
    while (list.children.length > MAX_ITEMS) list.lastElementChild.remove();
    this.count += 1;
    const count = $("notification-count");
    count.textContent = String(this.count);
    show(count);
    show($("notifications-empty"), false);
  }
}
