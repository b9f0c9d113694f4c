// Maintenance mode: a modal that cannot be dismissed while tidings.maintenance says "on".

import { $, clock, show } from "./dom.js";
import { nameOf } from "./names.js";

const DEFAULT_MESSAGE = "The system is being updated. This page will be back as soon as it is done.";

export class MaintenanceModal {
  constructor(live) {
    this.live = live;
    this.state = null;
  }

  mount() {
    // The retained event tells a page that connects later; status() answers as well.
    this.live.follow("tidings.maintenance", (event) => this.apply(event), {
      history: false,
      retained: true,
    });
    this.live.on("join", () => this.ask());
    if (this.live.session) this.ask();
    // Nothing on the page can close it: keep focus and keys away from what is behind.
    document.addEventListener("keydown", (event) => {
      if (this.state && this.state.enabled && event.key === "Escape") event.preventDefault();
    });
  }

  async ask() {
    try {
      this.apply(await this.live.call("tidings.maintenance.status"));
    } catch (error) {
      console.warn("tidings: maintenance status unavailable", error.error || error);
    }
  }

  apply(state) {
    if (!state || typeof state.enabled !== "boolean") return;
    // The newest word wins, whichever way it came (live event, retained event, status()).
    if (this.state && this.state.at && (!state.at || moment(state.at) < moment(this.state.at))) {
      return;
    }
    this.state = state;
    const modal = $("maintenance-modal");
    const wasShown = !modal.hidden;
    if (state.enabled) {
      $("maintenance-message").textContent = state.message || DEFAULT_MESSAGE;
      const by = state.by !== null && state.by !== undefined ? ` by ${nameOf(state.by)}` : "";
      $("maintenance-since").textContent = state.at ? `Since ${clock(state.at)}${by}` : "";
      if (!wasShown) modal.dataset.shownAt = String(Date.now());
    }
    show(modal, state.enabled);
    document.querySelector("main").inert = state.enabled;
    document.querySelector(".topbar").inert = state.enabled;
  }
}

// As a time, not as text: producers may give any offset ("12:00+02:00" is before "10:30Z").
function moment(at) {
  const ms = Date.parse(at);
  return Number.isNaN(ms) ? -Infinity : ms;
}
