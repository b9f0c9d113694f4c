// The record edit form: who else is editing it (presence) and whether it changed under us.

import { $, listNames, show, toast } from "./dom.js";
import { nameOf } from "./names.js";
import * as dev from "./dev.js";

const FIELDS = ["customer", "status", "total", "note"];
// Shown when there is no dev endpoint to load the record from (an embedding app owns it).
const SAMPLE = { customer: "Northwind Traders", status: "new", total: "1250.00", note: "" };

export class RecordPanel {
  constructor(live, { entity, id, devMode }) {
    this.live = live;
    this.entity = entity;
    this.id = id;
    this.devMode = devMode;
    this.others = new Set();
    this.form = $("record-form");
    this.root = $("record");
  }

  mount() {
    const label = this.entity.charAt(0).toUpperCase() + this.entity.slice(1);
    $("record-title").textContent = `${label} #${this.id}`;
    show(this.root);
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    $("reload").addEventListener("click", () => this.reload());
    if (!this.devMode) {
      $("save").disabled = true;
      $("save-status").textContent = "Saving is your application's part.";
    }
    this.load();

    const presence = `tidings.presence.${this.entity}.${this.id}`;
    this.live.follow(presence, (event) => this.onPresence(event), { history: false });
    // Subscribing to the record is what tells the others that this user is on it.
    this.live.follow(`tidings.entity.${this.entity}.${this.id}`, (event) => this.onChange(event), {
      onError: (error) => this.refused(error),
    });
    this.live.on("join", () => this.refreshEditors());
    if (this.live.session) this.refreshEditors();
  }

  async load() {
    const values = this.devMode ? (await dev.getRecord(this.entity, this.id)).values : SAMPLE;
    this.saved = { ...values };
    for (const name of FIELDS) this.form.elements[name].value = values[name] ?? "";
    $("record-status").textContent = values.status;
    $("record-status").dataset.status = values.status;
  }

  // -- presence ---------------------------------------------------------------------
  async refreshEditors() {
    if (this.denied) return;
    try {
      const editors = await this.live.call("tidings.entity.editors", this.entity, this.id);
      this.others = new Set(editors.map(String).filter((user) => user !== String(this.live.user)));
      this.renderPresence();
    } catch (error) {
      console.warn("tidings: editors unavailable", error.error || error);
    }
  }

  onPresence({ user, state }) {
    if (String(user) === String(this.live.user)) return;
    if (state === "joined") this.others.add(String(user));
    if (state === "left") this.others.delete(String(user));
    this.renderPresence();
  }

  renderPresence() {
    const names = [...this.others].map(nameOf).sort();
    const line = $("presence");
    line.textContent = names.length
      ? `${listNames(names)} ${names.length === 1 ? "is" : "are"} also editing this record`
      : "";
    show(line, names.length > 0);
  }

  // -- changes by others -----------------------------------------------------------
  onChange(event) {
    const self = String(event.changed_by) === String(this.live.user);
    let text;
    if (self) {
      text = "You changed this record in another tab";
    } else {
      const who = nameOf(event.changed_by);
      const fields = event.fields && event.fields.length ? ` (${event.fields.join(", ")})` : "";
      text = event.action === "deleted"
        ? `This record was deleted by ${who}`
        : `This record was changed by ${who}${fields} — reload`;
    }
    const notice = $("outdated-notice");
    $("outdated-text").textContent = text;
    notice.dataset.kind = self ? "self" : "other";
    for (const name of FIELDS) {
      const changed = !self && (event.fields || []).includes(name);
      this.form.elements[name].classList.toggle("changed", changed);
    }
    show(notice);
    // Restart the flash animation for every new change.
    notice.classList.remove("flash");
    void notice.offsetWidth;
    notice.classList.add("flash");
  }

  async reload() {
    if (!this.devMode) {
      location.reload();
      return;
    }
    await this.load();
    show($("outdated-notice"), false);
    for (const name of FIELDS) this.form.elements[name].classList.remove("changed");
    $("save-status").textContent = "Reloaded.";
  }

  refused(error) {
    this.denied = true;
    show($("outdated-notice"), false);
    const refused = $("record-refused");
    refused.textContent = `You may not view ${this.entity} records (${error.error || error}).`;
    show(refused);
    this.form.querySelector("fieldset").disabled = true;
    $("save").disabled = true;
  }

  // -- saving (dev mode: the dev endpoint plays the application) -------------------
  async save() {
    const values = Object.fromEntries(FIELDS.map((name) => [name, this.form.elements[name].value]));
    const status = $("save-status");
    status.textContent = "Saving…";
    try {
      const answer = await dev.saveRecord(this.entity, this.id, {
        user: this.live.user,
        session: this.live.session ? this.live.session.id : null,
        values,
      });
      this.saved = answer.values;
      $("record-status").textContent = answer.values.status;
      $("record-status").dataset.status = answer.values.status;
      status.textContent = answer.fields.length ? `Saved (${answer.fields.join(", ")}).` : "No changes to save.";
      show($("outdated-notice"), false);
      for (const name of FIELDS) this.form.elements[name].classList.remove("changed");
    } catch (error) {
      status.textContent = "";
      toast(`Not saved: ${error.message}`, "error");
    }
  }
}
