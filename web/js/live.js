// The page's one WAMP connection: fresh ticket per connect, reconnect with backoff (to the
// next router of its list when its own is gone), resubscribe, recover missed events
// through tidings.history.since, drop duplicates.

const HISTORY_GAP = "tidings.error.history_gap";
// Refusals a new ticket cannot fix: stop and say so.
const FINAL_REFUSALS = new Set(["tidings.error.invalid_ticket", "tidings.error.no_such_realm"]);
const SEEN_LIMIT = 2000;
const FIRST_DELAY = 0.5;
const MAX_DELAY = 4;

export class Live {
  /**
   * @param {object} options
   * @param {string|string[]} options.url  WebSocket URL of the router, or of each router node
   * @param {() => Promise<string>} options.ticket  a NEW one-time ticket on every call
   */
  constructor({ url, realm = "tidings", ticket }) {
    this.urls = Array.isArray(url) ? url : [url];
    this.index = 0;
    this.realm = realm;
    this.fetchTicket = ticket;
    this.state = "connecting";
    this.session = null;
    this.user = null;
    this.joins = 0;
    this.follows = [];
    this.listeners = {};
    this.delay = FIRST_DELAY;
    this.connection = null;
  }

  on(event, listener) {
    (this.listeners[event] ||= []).push(listener);
    return this;
  }

  emit(event, ...args) {
    for (const listener of this.listeners[event] || []) {
      try {
        listener(...args);
      } catch (error) {
        console.warn(`tidings: a ${event} listener failed`, error);
      }
    }
  }

  setState(state, detail = {}) {
    this.state = state;
    this.emit("state", state, detail);
  }

  /**
   * Receive the events of `topic`: now if connected, and again after every reconnect.
   * history: recover missed events after a reconnect; backfill: also on the first join;
   * retained: ask the router for the retained event.
   */
  follow(topic, handler, { history = true, backfill = false, retained = false, onError } = {}) {
    const follow = {
      topic, handler, history, backfill, retained, onError, lastId: null, seen: new Set(),
      place: new Place(), anchored: false,
    };
    this.follows.push(follow);
    if (this.session) {
      const session = this.session;
      follow.starting = this.subscribe(session, follow).then(() => this.recover(session, follow));
    }
    return follow;
  }

  call(procedure, ...args) {
    if (!this.session) return Promise.reject(new Error("not connected"));
    return this.session.call(procedure, args);
  }

  get url() {
    return this.urls[this.index];
  }

  start() {
    this.connection = new autobahn.Connection({
      url: this.url,
      realm: this.realm,
      authmethods: ["ticket"],
      // autobahn waits for the promise: every attempt presents a fresh ticket.
      onchallenge: (session, method) => {
        if (method !== "ticket") throw new Error(`unsupported auth method ${method}`);
        return this.fetchTicket();
      },
      max_retries: 0, // reconnecting is done below, also after a clean close
    });
    this.connection.onopen = (session, details) => this.joined(session, details);
    this.connection.onclose = (reason, details) => this.closed(reason, details);
    this.connection.open();
  }

  closed(reason, details) {
    const wasJoined = this.session !== null;
    this.session = null;
    const why = details && details.reason;
    if (FINAL_REFUSALS.has(why)) {
      this.setState("signed-out", { reason: why, message: details.message });
      return true;
    }
    const delay = this.delay * (0.8 + Math.random() * 0.4);
    this.delay = Math.min(this.delay * 1.5, MAX_DELAY);
    this.setState(this.joins ? "reconnecting" : "connecting", { reason: why || reason, delay, wasJoined });
    // A connection that never joined: its router is gone; try the next one.
    const next = !wasJoined && this.urls.length > 1;
    if (next) this.index = (this.index + 1) % this.urls.length;
    setTimeout(() => {
      try {
        if (next) this.start();
        else this.connection.open();
      } catch (error) {
        console.warn("tidings: reconnect skipped", error); // already opening
      }
    }, delay * 1000);
    return true; // autobahn's own retry stays off
  }

  async joined(session, details) {
    this.session = session;
    this.user = details.authid;
    this.delay = FIRST_DELAY;
    this.joins += 1;
    const first = this.joins === 1;
    const follows = [...this.follows]; // the ones added by "join" listeners recover by themselves
    for (const follow of follows) await this.subscribe(session, follow);
    this.setState("connected", { session: session.id, user: this.user, first });
    this.emit("join", session, details);
    let recovered = 0;
    for (const follow of follows) recovered += await this.recover(session, follow);
    if (!first) this.emit("recovered", recovered);
    // Those followed by "join" listeners catch up by themselves: wait for them too.
    await Promise.all(this.follows.map((follow) => follow.starting));
    // Every topic followed is subscribed and caught up.
    if (session.isOpen) this.emit("synced", session);
  }

  async subscribe(session, follow) {
    const options = follow.retained ? { get_retained: true } : {};
    try {
      await session.subscribe(follow.topic, (args, kwargs) => this.deliver(follow, args[0] ?? kwargs), options);
    } catch (error) {
      if (follow.onError) follow.onError(error);
      else console.warn(`tidings: cannot subscribe to ${follow.topic}`, error.error || error);
    }
  }

  /**
   * Ask the history for what this topic missed; returns how many events it delivered.
   *
   * The first time, the page starts reading the topic here: a backfill delivers what the
   * router holds, any other follow only notes where the held events end. From then on,
   * whatever came after the last event seen (or noted) was missed, even on a topic that
   * had no event yet when the page opened.
   */
  async recover(session, follow) {
    if (!follow.history) return 0;
    const starting = !follow.anchored;
    const noting = starting && !follow.backfill;
    let from = starting ? null : follow.place.resumeFrom() || follow.lastId;
    let delivered = 0;
    // An answer is bounded in size: ask again from its last event until nothing is left.
    for (let round = 0; round < 50 && session.isOpen; round += 1) {
      let events;
      try {
        events = await session.call("tidings.history.since", [follow.topic, from]);
      } catch (error) {
        if (error.error === HISTORY_GAP) this.emit("gap", follow.topic);
        else console.warn(`tidings: no history for ${follow.topic}`, error.error || error);
        return delivered;
      }
      follow.anchored = true;
      if (!Array.isArray(events) || events.length === 0) break;
      for (const event of events) {
        if (noting) follow.place.saw(event.position);
        else if (this.deliver(follow, event, true)) delivered += 1;
      }
      from = noting ? events[events.length - 1].event_id : follow.place.resumeFrom() || follow.lastId;
    }
    // Noted, not delivered; an event that came live meanwhile is newer.
    if (noting && !follow.lastId) follow.lastId = from;
    return delivered;
  }

  /** Hand an event to its handler once; false for a duplicate. */
  deliver(follow, payload, recovered = false) {
    const id = payload && payload.event_id;
    if (payload) follow.place.saw(payload.position);
    if (id) {
      follow.lastId = id;
      if (follow.seen.has(id)) return false;
      follow.seen.add(id);
      if (follow.seen.size > SEEN_LIMIT) follow.seen.delete(follow.seen.values().next().value);
    }
    try {
      follow.handler(payload, { topic: follow.topic, recovered });
    } catch (error) {
      console.warn(`tidings: handler of ${follow.topic} failed`, error);
    }
    return true;
  }
}

/**
 * Where to resume a topic in shared mode: after the last event of an unbroken run of
 * positions (`<epoch>:<offset>`, consecutive per topic), so that an event that came
 * late or not at all is asked for again; null without positions (memory mode).
 */
class Place {
  constructor() {
    this.epoch = null;
    this.run = 0;
    this.above = new Set();
  }

  saw(position) {
    if (typeof position !== "string") return;
    const at = position.lastIndexOf(":");
    const epoch = position.slice(0, at);
    const offset = Number(position.slice(at + 1));
    if (!Number.isSafeInteger(offset)) return;
    if (epoch !== this.epoch) {
      this.epoch = epoch;
      this.run = offset;
      this.above.clear();
      return;
    }
    if (offset > this.run) this.above.add(offset);
    while (this.above.delete(this.run + 1)) this.run += 1;
    if (this.above.size > 10000) this.above.clear(); // never grows without bound
  }

  resumeFrom() {
    return this.epoch === null ? null : `${this.epoch}:${this.run}`;
  }
}
