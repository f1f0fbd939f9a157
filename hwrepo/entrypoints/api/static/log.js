// A check's log, paged by byte range (X-Next-Offset). While the check is queued or running the
// API answers with what the worker has copied so far (X-Log-Live: true): the page asks again
// every second and a half from where it got to, and once the check.finished event comes, reads
// the rest of the stored log.
"use strict";
(() => {
  const box = document.getElementById("log");
  if (!box) return;
  const text = document.getElementById("log-text"), more = document.getElementById("log-more");
  const follow = document.getElementById("log-follow"), status = document.getElementById("log-status");
  const PAGE = 256 * 1024, AGAIN_MS = 1500;
  let offset = 0, size = 0, busy = false, timer = null, final = box.dataset.final === "true";
  function again(ms) {
    if (!timer) timer = setTimeout(() => { timer = null; load(); }, ms);
  }
  // true once the stored log of the ended check was read
  async function load() {
    if (busy) return false;
    busy = true;
    try {
      const response = await fetch(`${box.dataset.url}?offset=${offset}&limit=${PAGE}`, { credentials: "same-origin" });
      if (response.status === 404) { status.textContent = final ? "(no log)" : "(not written yet)"; return false; }
      const chunk = await response.text();
      const live = response.headers.get("X-Log-Live") === "true";
      size = +(response.headers.get("X-Log-Size") || 0);
      text.append(chunk);
      const next = response.headers.get("X-Next-Offset");
      // (a live log seen shorter than before: the worker removed its copy as the job ended)
      offset = next ? +next : Math.max(offset, size);
      more.hidden = !next;
      status.textContent = live ? `${offset} bytes so far (the check is running)` : `${offset} of ${size} bytes`;
      if (follow.checked) text.scrollTop = text.scrollHeight;
      if (live && !final) again(next ? 0 : AGAIN_MS);
      return !live;
    } finally { busy = false; }
  }
  // the index records the finished check (and so its stored log) a moment after the event
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
        loadWhenStored(20);
      }
    });
  }
})();
