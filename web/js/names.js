// Display names of user ids: the demo users in dev mode, or window.tidingsUserNames.

const known = new Map();

export function addNames(entries) {
  for (const [id, name] of Object.entries(entries || {})) known.set(String(id), String(name));
}

export function nameOf(user) {
  if (user === null || user === undefined) return "someone";
  return known.get(String(user)) || `User ${user}`;
}
