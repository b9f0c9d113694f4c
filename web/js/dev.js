// The development-only endpoint /dev of the router: demo tickets, the demo record, demo feeds.

async function request(method, path, body) {
  const response = await fetch(`dev/${path}`, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
    cache: "no-store",
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(answer.error || `dev endpoint answered ${response.status}`);
  }
  return answer;
}

/** The demo users, or null when the router is not in development mode. */
export async function demoUsers() {
  const response = await fetch("dev/users", { cache: "no-store" });
  return response.ok ? response.json() : null;
}

export const devTicket = (user) => request("POST", "ticket", { user }).then((a) => a.ticket);
export const getRecord = (entity, id) => request("GET", `records/${entity}/${id}`);
export const saveRecord = (entity, id, body) => request("POST", `records/${entity}/${id}`, body);
export const notifyMe = (user, text) => request("POST", "notify", { user, text });
export const startFeed = () => request("POST", "feed", { count: 120, interval: 0.5 });
