// How the page gets its tickets: the embedding app's hook, or the dev endpoint in dev mode.

import { $, el, show } from "./dom.js";
import { addNames } from "./names.js";
import * as dev from "./dev.js";

const USER_ID = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Resolves to { ticket, devMode, user } when the page can sign in; otherwise shows
 * the user picker (dev mode) or the help text, and resolves to null.
 */
export async function signIn(params) {
  if (typeof window.tidingsTicket === "function") {
    addNames(window.tidingsUserNames);
    return { ticket: async () => window.tidingsTicket(), devMode: false, user: null };
  }
  const demo = await dev.demoUsers().catch(() => null);
  if (!demo) {
    showSignin("signin-help");
    return null;
  }
  addNames(Object.fromEntries(demo.users.map((u) => [u.id, u.name])));
  const user = params.get("user");
  const known = demo.users.some((u) => u.id === user);
  if (user && known) {
    return { ticket: () => dev.devTicket(user), devMode: true, user };
  }
  pickUser(demo.users, params);
  if (user && !USER_ID.test(user)) {
    signinError(`"${user}" is not a user id: use letters, digits, "_" or "-".`);
  } else if (user) {
    signinError(`"${user}" is not one of the demo users: pick one below.`);
  }
  return null;
}

function pickUser(users, params) {
  const list = document.querySelector(".user-list");
  for (const { id, name } of users) {
    const query = new URLSearchParams(params);
    query.set("user", id);
    const link = el("a", { class: "user-pick", href: `?${query}`, test: `pick-user-${id}` },
      el("span", { class: "avatar", "aria-hidden": "true" }, name.charAt(0)),
      el("span", {}, name),
      el("span", { class: "muted" }, `id ${id}`));
    list.append(el("li", {}, link));
  }
  showSignin("user-picker");
}

function showSignin(part) {
  show($("signin"));
  show($(part));
}

export function signinError(text) {
  show($("signin"));
  const node = $("signin-error");
  node.textContent = text;
  show(node);
}
