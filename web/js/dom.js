// Small DOM helpers shared by the page's modules.

/** The element carrying data-test="name" (the page's stable hooks, also used by the tests). */
export function $(name, root = document) {
  return root.querySelector(`[data-test="${name}"]`);
}

/** Create an element with attributes and children (strings become text, never HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "test") node.dataset.test = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function show(node, visible = true) {
  node.hidden = !visible;
}

/** "10:42:07" for an ISO timestamp (or now). */
export function clock(iso) {
  const when = iso ? new Date(iso) : new Date();
  return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** "Alice", "Alice and Bob", "Alice, Bob and Carol". */
export function listNames(names) {
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

/** A short message in the corner that goes away by itself. */
export function toast(text, kind = "info") {
  const node = el("div", { class: `toast toast-${kind}`, test: "toast" }, text);
  $("toasts").append(node);
  setTimeout(() => node.remove(), 4000);
}
