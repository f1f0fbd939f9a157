// The violation table of a DRC, ERC or lint check (filtered and paged through the API) and,
// beside it, the board or schematic with every violation drawn at its position. A row's click
// selects its marker and zooms there; a marker's click selects its row. `#violation-{index}`
// (the index in the check's full list) opens with that violation selected. Review threads
// (rendered by the server, hidden in #violation-threads) are moved under their violation's row;
// a reviewer's "comment" button shows a copy of the page's new-thread form for that violation.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("violation-data").textContent);
  const tbody = document.querySelector("#violations tbody");
  const filters = document.getElementById("violation-filters");
  const PER_PAGE = 50;
  const SVG = "http://www.w3.org/2000/svg";
  let page = 1, total = 0, selected = null, panZoom = null, drawing = null;
  const byIndex = Object.fromEntries(data.positions.map((p) => [p.index, p]));
  const pool = document.getElementById("violation-threads");
  const threadForm = document.getElementById("new-violation-thread");
  const discussed = new Set([...pool.querySelectorAll(".thread[data-identity]")].map((t) => t.dataset.identity));
  const wantedThread = /^#thread-([\w-]+)$/.exec(location.hash);

  // -- the table ----------------------------------------------------------------------------
  function query() {
    const q = new URLSearchParams({ page, per_page: PER_PAGE });
    for (const [k, v] of new FormData(filters)) if (v) q.set(k, v);
    return q;
  }
  function where(v) {
    if (!v.file) return document.createTextNode("");
    const a = hwrepo.el("a", { href: data.page + encodeURI(v.file) + (v.line ? `#L${v.line}` : ""), text: `${v.file}${v.line ? ":" + v.line : ""}` });
    return hwrepo.el("div", {}, a);
  }
  function rowOf(v) {
    const tr = hwrepo.el("tr", { class: "violation", id: `violation-${v.index}`, "data-index": v.index });
    const items = hwrepo.el("ul", { class: "muted" });
    for (const item of v.items || []) {
      const at = item.x_mm != null ? ` @ (${item.x_mm.toFixed(2)}, ${item.y_mm.toFixed(2)}) mm` : "";
      items.append(hwrepo.el("li", { text: `${item.description || ""}${at}${item.sheet ? " on " + item.sheet : ""}` }));
    }
    const flags = [v.waived ? "waived" : "", v.excluded ? "excluded" : ""].filter(Boolean).join(", ");
    const desc = hwrepo.el("td", {}, hwrepo.el("div", { text: v.description || "" }), where(v), items);
    if (flags) desc.append(hwrepo.el("div", { class: "muted", text: flags + (v.waiver && v.waiver.reason ? `: ${v.waiver.reason}` : "") }));
    if (data.show) {
      desc.append(hwrepo.el("div", { class: "copy muted" }, "open in KiCad: ", hwrepo.el("code", { text: `${data.show} ${v.index}` })));
    }
    if (data.can_review && threadForm) desc.append(startButton(v, tr));
    tr.append(hwrepo.el("td", { text: v.index }), hwrepo.el("td", { class: `sev-${v.severity}`, text: v.severity }),
      hwrepo.el("td", { text: v.type }), desc);
    tr.addEventListener("click", () => select(v.index, true));
    return tr;
  }
  // the row's threads in a row of their own below it; a reviewer's button on the violation's
  // row puts a new-thread form there
  function threadsRow(v) {
    const threads = [...pool.querySelectorAll(".thread")].filter((t) => t.dataset.identity === v.identity);
    if (!threads.length) return null;
    return hwrepo.el("tr", { class: "thread-row", "data-identity": v.identity, "data-index": v.index },
      hwrepo.el("td", { colspan: 4 }, ...threads));
  }
  function startButton(v, tr) {
    const button = hwrepo.el("button", { type: "button", class: "start-thread", text: "Comment" });
    button.addEventListener("click", (e) => {
      e.stopPropagation();
      let below = tr.nextElementSibling;
      if (!below || !below.classList.contains("thread-row")) {
        below = hwrepo.el("tr", { class: "thread-row", "data-identity": v.identity, "data-index": v.index }, hwrepo.el("td", { colspan: 4 }));
        tr.after(below);
      }
      const form = threadForm.cloneNode(true);
      form.removeAttribute("id");
      form.hidden = false;
      form.querySelector("input[name=identity]").value = v.identity;
      form.querySelector("input[name=back]").value = `${location.pathname}#violation-${v.index}`;
      below.firstElementChild.append(form);
      button.remove();
      form.querySelector("textarea").focus();
    });
    return button;
  }
  async function load(wanted) {
    const body = await hwrepo.json(`${data.api}/violations?${query()}`);
    total = body.total;
    pool.append(...tbody.querySelectorAll(".thread")); // keep them for the next page
    tbody.replaceChildren(...body.items.flatMap((v) => [rowOf(v), threadsRow(v)].filter(Boolean)));
    if (!body.items.length) tbody.append(hwrepo.el("tr", {}, hwrepo.el("td", { colspan: 4, class: "muted", text: "No violations match." })));
    const pages = Math.max(1, Math.ceil(total / PER_PAGE));
    document.getElementById("v-page").textContent = `page ${page} of ${pages} (${total})`;
    document.getElementById("v-prev").disabled = page <= 1;
    document.getElementById("v-next").disabled = page >= pages;
    if (wanted != null) select(wanted, true);
    else if (selected != null) mark(selected);
    if (wantedThread) {
      const shown = document.getElementById(`thread-${wantedThread[1]}`);
      if (shown && tbody.contains(shown)) shown.scrollIntoView({ block: "center" });
    }
  }
  document.getElementById("v-prev").addEventListener("click", () => { page--; load(); });
  document.getElementById("v-next").addEventListener("click", () => { page++; load(); });
  filters.addEventListener("change", () => { page = 1; load(); });

  async function select(index, zoom) {
    selected = index;
    if (!document.getElementById(`violation-${index}`)) {
      // not on this page: show the unfiltered page that holds it
      filters.reset();
      page = Math.floor(index / PER_PAGE) + 1;
      return load(index);
    }
    history.replaceState(null, "", `#violation-${index}`);
    mark(index);
    const row = document.getElementById(`violation-${index}`);
    row.scrollIntoView({ block: "nearest" });
    if (zoom) zoomTo(index);
  }
  function mark(index) {
    for (const el of document.querySelectorAll(".selected")) el.classList.remove("selected");
    const row = document.getElementById(`violation-${index}`);
    if (row) row.classList.add("selected");
    for (const m of document.querySelectorAll(`circle.marker[data-index="${index}"]`)) m.classList.add("selected");
  }

  // -- the drawing ----------------------------------------------------------------------------
  const board = document.getElementById("board");
  async function show(key) {
    drawing = data.drawings.find((d) => d.key === key) || data.drawings[0];
    for (const b of document.querySelectorAll("#drawing-tabs button")) b.classList.toggle("on", b.dataset.key === drawing.key);
    // the render's own size (its viewBox), read from the SVG the render check made
    const text = await (await fetch(drawing.url, { credentials: "same-origin" })).text();
    const root = new DOMParser().parseFromString(text, "image/svg+xml").documentElement;
    const box = (root.getAttribute("viewBox") || "0 0 100 100").split(/[\s,]+/).map(Number);
    // a board render is cut to the board: board coordinates are shifted by its origin and the
    // margin the export leaves around the outline; a schematic is the page itself
    const dx = drawing.size ? (box[2] - drawing.size[0]) / 2 - drawing.origin[0] : -drawing.origin[0];
    const dy = drawing.size ? (box[3] - drawing.size[1]) / 2 - drawing.origin[1] : -drawing.origin[1];
    if (panZoom) { panZoom.destroy(); panZoom = null; }
    board.replaceChildren();
    board.setAttribute("viewBox", box.join(" "));
    const image = document.createElementNS(SVG, "image");
    image.setAttribute("href", drawing.url);
    for (const [k, v] of [["x", box[0]], ["y", box[1]], ["width", box[2]], ["height", box[3]]]) image.setAttribute(k, v);
    const layer = document.createElementNS(SVG, "g");
    layer.append(image);
    const radius = Math.max(box[2], box[3]) / 100;
    for (const p of data.positions) {
      for (const [x, y, sheet] of p.points) {
        if (sheet !== drawing.key) continue;
        const c = document.createElementNS(SVG, "circle");
        c.setAttribute("cx", x + dx); c.setAttribute("cy", y + dy); c.setAttribute("r", radius);
        c.setAttribute("class", `marker sev-${p.severity}${discussed.has(p.identity) ? " has-thread" : ""}`);
        c.dataset.index = p.index;
        const title = document.createElementNS(SVG, "title");
        title.textContent = `violation ${p.index}${discussed.has(p.identity) ? " (review thread)" : ""}`;
        c.append(title);
        c.addEventListener("click", (e) => { e.stopPropagation(); select(p.index, false); });
        layer.append(c);
      }
    }
    board.append(layer);
    panZoom = svgPanZoom(board, { zoomScaleSensitivity: 0.3, minZoom: 0.5, maxZoom: 200, dblClickZoomEnabled: false });
    if (selected != null) mark(selected);
  }
  function zoomTo(index) {
    const p = byIndex[index];
    if (!panZoom || !p || !p.points.length) return;
    const onSheet = p.points.find((pt) => pt[2] === drawing.key);
    if (!onSheet) {
      const other = p.points[0][2];
      if (data.drawings.some((d) => d.key === other)) return show(other).then(() => zoomTo(index));
      return;
    }
    const marker = document.querySelector(`circle.marker[data-index="${index}"]`);
    if (!marker) return;
    panZoom.reset();
    panZoom.zoom(6);
    const sizes = panZoom.getSizes();
    const x = +marker.getAttribute("cx") - sizes.viewBox.x, y = +marker.getAttribute("cy") - sizes.viewBox.y;
    panZoom.pan({ x: sizes.width / 2 - x * sizes.realZoom, y: sizes.height / 2 - y * sizes.realZoom });
  }
  for (const b of document.querySelectorAll("#drawing-tabs button")) b.addEventListener("click", () => show(b.dataset.key));

  window.addEventListener("hashchange", () => {
    const m = /^#violation-(\d+)$/.exec(location.hash);
    if (m && +m[1] !== selected) select(+m[1], true);
  });
  const hash = /^#violation-(\d+)$/.exec(location.hash);
  const start = board && data.drawings.length ? show(data.drawings[0].key) : Promise.resolve();
  // `#thread-{id}` opens the page holding that thread's violation
  const threadOf = wantedThread && document.getElementById(`thread-${wantedThread[1]}`);
  const about = threadOf && data.positions.find((p) => p.identity === threadOf.dataset.identity);
  start.then(() => {
    if (hash) { const i = +hash[1]; page = Math.floor(i / PER_PAGE) + 1; return load(i); }
    if (about) { page = Math.floor(about.index / PER_PAGE) + 1; return load(about.index); }
    return load();
  });
})();
