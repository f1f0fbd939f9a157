// Live check states of a revision, from the project's Server-Sent Events (no polling): each
// check.* event updates its row in place; a check not yet listed is added. Review events after
// the page was read are announced above the threads (on a revision's page and a file's).
"use strict";
(() => {
  const table = document.getElementById("checks");
  const news = document.getElementById("review-news");
  if (!table && !news) return;
  const project = (table || news).dataset.project, revision = (table || news).dataset.revision;
  const status = document.getElementById("live-state") || { textContent: "" };
  const order = { queued: 0, running: 1 };
  const rank = (s) => (s in order ? order[s] : 2);
  const stateOf = {};
  for (const row of table ? table.querySelectorAll("tr[data-check-id]") : []) {
    stateOf[row.dataset.checkId] = { run: +row.dataset.run, state: row.querySelector(".state").textContent };
  }
  function row(data) {
    let tr = table.querySelector(`tr[data-check-id="${data.check_id}"]`);
    if (!tr) {
      const link = hwrepo.el("a", { href: `/${project}/revisions/${revision}/checks/${data.check_id}`, text: data.name || data.check_id });
      tr = hwrepo.el("tr", { "data-check-id": data.check_id, "data-run": data.run || 1 },
        hwrepo.el("td", { text: data.kind || "" }), hwrepo.el("td", {}, link),
        hwrepo.el("td", {}, hwrepo.el("span", { class: "state" })), hwrepo.el("td", { class: "summary" }));
      table.querySelector("tbody").append(tr);
      const none = document.getElementById("no-checks");
      if (none) none.remove();
    }
    return tr;
  }
  function apply(data, state, summary) {
    const known = stateOf[data.check_id];
    const run = data.run || 1;
    // events of an older run, or a step back within a run (a late duplicate), change nothing
    if (known && (run < known.run || (run === known.run && rank(state) < rank(known.state)))) return;
    stateOf[data.check_id] = { run, state };
    const tr = row(data);
    tr.dataset.run = run;
    hwrepo.badge(tr.querySelector(".state"), state);
    if (summary !== undefined) tr.querySelector(".summary").textContent = summary;
    overall();
  }
  function overall() {
    const badge = document.getElementById("revision-state");
    if (!badge) return;
    const states = Object.values(stateOf).map((s) => s.state);
    if (!states.length || states.some((s) => s === "queued" || s === "running")) return hwrepo.badge(badge, "pending");
    // the final word (required checks, supersession) is the server's; its index may record
    // the last verdict a moment after the event was sent, so ask again a few times
    settle(badge, 10);
  }
  function settle(badge, tries) {
    hwrepo.json(`/api/v1/projects/${project}/revisions/${revision}/checks`).then((b) => {
      hwrepo.badge(badge, b.state);
      const open = Object.values(stateOf).some((s) => s.state === "queued" || s.state === "running");
      if (b.state === "pending" && !open && tries > 1) setTimeout(() => settle(badge, tries - 1), 500);
    }).catch(() => {});
  }
  const source = new EventSource(`/api/v1/projects/${project}/events?revision=${revision}`);
  source.onopen = () => { status.textContent = "connected"; };
  source.onerror = () => { status.textContent = "reconnecting…"; };
  const on = (type, f) => source.addEventListener(type, (e) => { const ev = JSON.parse(e.data); f(ev.data || {}, ev); });
  if (table) {
    on("check.queued", (d) => apply(d, "queued", ""));
    on("check.started", (d) => apply(d, "running", `running on ${d.worker} (attempt ${d.attempt})`));
    on("check.finished", (d) => apply(d, d.state, d.summary));
    on("revision.planned", () => overall());
  }
  // Review activity after this page was read (the stream also replays what it shows): said
  // above the threads, with a reload, rather than redrawn in place under the reader's hands.
  // On a file's page (data-path), only threads on that file.
  const since = news ? Date.parse(news.dataset.since) : NaN;
  const path = news ? news.dataset.path : undefined;
  const what = {
    "review.created": (d) => `${d.author} began a thread`,
    "review.commented": (d) => `${d.author} commented`,
    "review.resolved": (d) => `${d.author} ${d.resolved ? "resolved" : "reopened"} a thread`,
    "review.verdict": (d) => `${d.reviewer} ${d.verdict === "approve" ? "approved" : "requested changes"}`,
  };
  let fresh = 0;
  for (const [type, say] of Object.entries(what)) {
    on(type, (d, ev) => {
      if (!news || !(Date.parse(ev.time) > since)) return;
      if (path !== undefined && !(d.anchor && d.anchor.path === path)) return;
      fresh += 1;
      const count = fresh === 1 ? "1 review event" : `${fresh} review events`;
      news.replaceChildren(`${count} since this page was loaded (the last: ${say(d)}): `,
        hwrepo.el("a", { href: location.pathname + location.search, id: "review-reload", text: "reload" }));
      news.hidden = false;
    });
  }
  window.addEventListener("beforeunload", () => source.close());
})();
