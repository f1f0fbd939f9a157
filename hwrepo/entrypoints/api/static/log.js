// A check's log, paged by byte range (X-Next-Offset). The worker stores a job's log when the
// job ends, so while the check is queued or running the page follows its events and shows the
// log as soon as the check.finished event says it is there.
"use strict";
(() => {
  const box = document.getElementById("log");
  if (!box) return;
  const text = document.getElementById("log-text"), more = document.getElementById("log-more");
  const follow = document.getElementById("log-follow"), status = document.getElementById("log-status");
  const PAGE = 256 * 1024;
  let offset = 0, size = 0, busy = false, final = box.dataset.final === "true";
  async function load() {
    if (busy) return;
    busy = true;
    try {
      const response = await fetch(`${box.dataset.url}?offset=${offset}&limit=${PAGE}`, { credentials: "same-origin" });
      if (response.status === 404) { status.textContent = final ? "(no log)" : "(not written yet)"; return false; }
      const chunk = await response.text();
      size = +(response.headers.get("X-Log-Size") || 0);
      text.append(chunk);
      const next = response.headers.get("X-Next-Offset");
      offset = next ? +next : size;
      more.hidden = !next;
      status.textContent = `${offset} of ${size} bytes`;
      if (follow.checked) text.scrollTop = text.scrollHeight;
      return true;
    } finally { busy = false; }
  }
  // the index records the finished check (and so its log) a moment after the event
  async function loadWhenStored(tries) {
    if (!(await load()) && tries > 1) setTimeout(() => loadWhenStored(tries - 1), 500);
  }
  more.addEventListener("click", load);
  load();
  if (!final) {
    const source = new EventSource(`/api/v1/projects/${box.dataset.project}/events?revision=${box.dataset.revision}`);
    source.addEventListener("check.finished", (e) => {
      const ev = JSON.parse(e.data);
      if (ev.data && ev.data.check_id === box.dataset.checkId) {
        final = true;
        source.close();
        const badge = document.getElementById("check-state");
        if (badge) hwrepo.badge(badge, ev.data.state);
        const summary = document.getElementById("check-summary");
        if (summary) summary.textContent = ev.data.summary;
        if (follow.checked) loadWhenStored(20);
      }
    });
  }
})();
