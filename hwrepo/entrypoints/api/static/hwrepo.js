// Shared by every page: the CSRF token of this browser's session, JSON fetches, state badges.
"use strict";
const hwrepo = {
  csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  },
  async json(url, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = hwrepo.csrf();
    const response = await fetch(url, Object.assign({}, options, { headers, credentials: "same-origin" }));
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
    return body;
  },
  badge(element, state) {
    element.className = element.className.replace(/\bstate-\S+/g, "").trim() + ` state state-${state}`;
    element.textContent = state;
  },
  el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  },
};
// the files list of a revision: filter as one types
document.addEventListener("DOMContentLoaded", () => {
  const filter = document.getElementById("file-filter");
  if (!filter) return;
  filter.addEventListener("input", () => {
    const q = filter.value.toLowerCase();
    for (const row of document.querySelectorAll("#files tr:not(:first-child)")) {
      row.hidden = q && !row.textContent.toLowerCase().includes(q);
    }
  });
});
