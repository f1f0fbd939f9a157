// The waveform viewer: a signal tree with search, the chosen signals drawn on a canvas from
// value changes the server decimated to the canvas' width (the waveform itself is never sent),
// zoom and pan, and a cursor showing every shown signal's exact value at its time. Buses in
// hex, binary or decimal; x and z drawn and printed as such. `#waves-t=NS` opens at NS ns.
"use strict";
(() => {
  const root = document.getElementById("waves");
  if (!root) return;
  const api = root.dataset.api;
  const canvas = document.getElementById("wave-canvas"), ctx = canvas.getContext("2d");
  const tree = document.getElementById("wave-tree"), search = document.getElementById("wave-search");
  const values = document.getElementById("wave-values"), radix = document.getElementById("wave-radix");
  const ROW = 28, LABEL = 150, MAX_SHOWN = 64;
  let info = null, shown = [], data = {}, t0 = 0, t1 = 1, cursor = null, cursorValues = {};
  let request = 0;

  // -- values --------------------------------------------------------------------------------
  function format(bits, width) {
    if (bits == null) return "—";
    if (!/^[01xzXZ]+$/.test(bits)) return bits; // real or string values: as they are
    bits = bits.toLowerCase();
    if (width === 1 || radix.value === "bin") return width === 1 ? bits : "0b" + bits;
    if (radix.value === "dec") return /[xz]/.test(bits) ? (bits.includes("x") ? "x" : "z") : BigInt("0b" + bits).toString(10);
    const padded = bits.padStart(Math.ceil(bits.length / 4) * 4, bits[0] === "x" || bits[0] === "z" ? bits[0] : "0");
    let out = "";
    for (let i = 0; i < padded.length; i += 4) {
      const nibble = padded.slice(i, i + 4);
      if (/^z+$/.test(nibble)) out += "z";
      else if (/[xz]/.test(nibble)) out += "x";
      else out += parseInt(nibble, 2).toString(16);
    }
    return "0x" + out;
  }
  const timeOf = (ticks) => {
    const s = ticks * info.timescale_s;
    for (const [unit, f] of [["s", 1], ["ms", 1e-3], ["us", 1e-6], ["ns", 1e-9], ["ps", 1e-12]]) if (Math.abs(s) >= f || unit === "ps") return `${+(s / f).toPrecision(6)} ${unit}`;
  };

  // -- the tree ------------------------------------------------------------------------------
  // scopes as nested, foldable lists; a search shows the matching signals with their scopes open
  function buildTree() {
    const q = search.value.toLowerCase();
    tree.replaceChildren();
    const scopes = new Map([["", tree]]);
    const scopeList = (path) => {
      if (scopes.has(path)) return scopes.get(path);
      const cut = path.lastIndexOf(".");
      const parent = scopeList(cut < 0 ? "" : path.slice(0, cut));
      const list = hwrepo.el("ul");
      const details = hwrepo.el("details", {}, hwrepo.el("summary", { text: path.slice(cut + 1) }), list);
      details.open = Boolean(q) || !path.includes(".");
      parent.append(hwrepo.el("li", { class: "scope" }, details));
      scopes.set(path, list);
      return list;
    };
    let count = 0;
    for (const s of info.signals) {
      if (q && !s.name.toLowerCase().includes(q)) continue;
      if (++count > 2000) { tree.append(hwrepo.el("li", { class: "muted", text: "… refine the search" })); break; }
      const cut = s.name.lastIndexOf(".");
      const leaf = s.name.slice(cut + 1);
      const li = hwrepo.el("li", { class: "signal", "data-signal": s.name, title: `${s.name} (${s.width} bit${s.width === 1 ? "" : "s"}): click to add`, text: `${leaf}${s.width > 1 ? ` [${s.width - 1}:0]` : ""}` });
      li.addEventListener("click", () => add(s.name));
      scopeList(cut < 0 ? "" : s.name.slice(0, cut)).append(li);
    }
    if (!count) tree.append(hwrepo.el("li", { class: "muted", text: "no signal matches" }));
  }
  search.addEventListener("input", buildTree);
  function add(name) {
    if (shown.includes(name) || shown.length >= MAX_SHOWN) return;
    shown.push(name);
    refresh();
  }
  function remove(name) {
    shown = shown.filter((n) => n !== name);
    refresh();
  }
  const widthOf = (name) => (info.signals.find((s) => s.name === name) || { width: 1 }).width;

  // -- data ----------------------------------------------------------------------------------
  async function fetchChanges(start, end, pixels) {
    const q = new URLSearchParams({ start: Math.floor(start), end: Math.ceil(end), pixels: Math.max(1, Math.floor(pixels)) });
    for (const n of shown) q.append("signal", n);
    return hwrepo.json(`${api}/waveform/changes?${q}`);
  }
  async function refresh() {
    resize();
    if (!shown.length) { data = {}; draw(); table(); return; }
    const mine = ++request;
    const body = await fetchChanges(t0, t1, canvas.width / devicePixelRatio - LABEL);
    if (mine !== request) return;
    data = body.signals;
    draw();
    if (cursor != null) await placeCursor(cursor); else table();
  }
  async function placeCursor(ticks) {
    cursor = Math.max(0, Math.round(ticks));
    const label = document.getElementById("wave-cursor-time");
    label.textContent = `cursor ${timeOf(cursor)}`;
    label.dataset.ticks = cursor;
    draw();
    if (!shown.length) return table();
    // the exact value at the cursor: the value each signal holds at that time
    const body = await fetchChanges(cursor, cursor + 1, 1);
    cursorValues = {};
    for (const n of shown) {
      const s = body.signals[n] || {};
      const first = (s.changes || [])[0];
      cursorValues[n] = first && first[0] === cursor ? first[1] : s.initial;
    }
    table();
  }
  function table() {
    values.replaceChildren();
    for (const n of shown) {
      const x = hwrepo.el("button", { type: "button", title: "remove", text: "×" });
      x.addEventListener("click", () => remove(n));
      const bits = cursor != null ? cursorValues[n] : null;
      values.append(hwrepo.el("tr", { "data-signal": n },
        hwrepo.el("td", {}, x), hwrepo.el("td", { text: n }),
        hwrepo.el("td", { class: "value", "data-bits": bits == null ? "" : bits, text: cursor != null ? format(bits, widthOf(n)) : "" })));
    }
  }
  radix.addEventListener("change", () => { draw(); table(); });

  // -- drawing -------------------------------------------------------------------------------
  function resize() {
    const w = Math.max(200, canvas.parentElement.clientWidth);
    canvas.width = w * devicePixelRatio;
    canvas.height = Math.max(1, shown.length) * ROW * devicePixelRatio + 20 * devicePixelRatio;
    canvas.style.height = canvas.height / devicePixelRatio + "px";
    ctx.setTransform(devicePixelRatio, 0, 0, devicePixelRatio, 0, 0);
  }
  const px = (t) => LABEL + ((t - t0) / (t1 - t0)) * (canvas.width / devicePixelRatio - LABEL);
  function draw() {
    const W = canvas.width / devicePixelRatio;
    ctx.clearRect(0, 0, W, canvas.height);
    ctx.font = "11px monospace";
    document.getElementById("wave-window").textContent = `${timeOf(t0)} – ${timeOf(t1)}`;
    shown.forEach((name, row) => {
      const s = data[name];
      const top = row * ROW + 4, mid = top + (ROW - 8) / 2, high = top, low = top + ROW - 8;
      if (!s || s.missing) return;
      const segments = [];
      let value = s.initial, from = t0;
      for (const [t, v, n] of s.changes) { segments.push([from, t, value, false]); if (n > 1) segments.push([t, t, v, true]); value = v; from = t; }
      segments.push([from, t1, value, false]);
      for (const [a, b, v, dense] of segments) {
        const x0 = Math.max(LABEL, px(a)), x1 = Math.min(W, Math.max(px(b), x0 + (dense ? 1 : 0)));
        const unknown = v == null || /x/i.test(v), floating = v != null && /^z+$/i.test(v);
        ctx.strokeStyle = unknown ? "#d33" : floating ? "#c90" : "#1e6b35";
        ctx.fillStyle = unknown ? "rgba(221,51,51,.25)" : "rgba(30,107,53,.12)";
        if (dense) { ctx.fillStyle = "#1e6b35"; ctx.fillRect(x0, high, Math.max(1, x1 - x0), low - high); continue; }
        if (s.width === 1 && !unknown && !floating) {
          const y = v === "1" ? high : low;
          ctx.beginPath(); ctx.moveTo(x0, v === "1" ? low : high); ctx.lineTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
        } else if (floating) {
          ctx.beginPath(); ctx.moveTo(x0, mid); ctx.lineTo(x1, mid); ctx.stroke();
        } else {
          if (unknown) ctx.fillRect(x0, high, x1 - x0, low - high);
          ctx.beginPath(); ctx.moveTo(x0, mid); ctx.lineTo(x0 + 2, high); ctx.lineTo(x1 - 2, high); ctx.lineTo(x1, mid);
          ctx.lineTo(x1 - 2, low); ctx.lineTo(x0 + 2, low); ctx.closePath(); ctx.stroke();
          const label = format(v, s.width);
          if (ctx.measureText(label).width < x1 - x0 - 6) { ctx.fillStyle = "#1d2330"; ctx.fillText(label, x0 + 4, mid + 4); }
        }
      }
    });
    // the names, in a column of their own left of the waves
    ctx.clearRect(0, 0, LABEL, canvas.height);
    ctx.fillStyle = "#1d2330";
    shown.forEach((name, row) => {
      const label = name.split(".").pop();
      ctx.fillText(label.length > 20 ? label.slice(0, 19) + "…" : label, 4, row * ROW + ROW / 2 + 4);
    });
    if (cursor != null && cursor >= t0 && cursor <= t1) {
      ctx.strokeStyle = "#284a7e"; ctx.beginPath(); ctx.moveTo(px(cursor), 0); ctx.lineTo(px(cursor), canvas.height); ctx.stroke();
    }
  }

  // -- zoom, pan, cursor ---------------------------------------------------------------------
  function windowTo(a, b) {
    const span = Math.max(10, b - a);
    t0 = Math.max(0, a); t1 = t0 + span;
    refresh();
  }
  const zoom = (f, at) => { const c = at ?? (t0 + t1) / 2; windowTo(c - (c - t0) * f, c + (t1 - c) * f); };
  document.getElementById("wave-zoom-in").addEventListener("click", () => zoom(0.5, cursor));
  document.getElementById("wave-zoom-out").addEventListener("click", () => zoom(2, cursor));
  document.getElementById("wave-fit").addEventListener("click", () => windowTo(0, Math.max(info.end, 10)));
  document.getElementById("wave-left").addEventListener("click", () => { const d = (t1 - t0) / 4; windowTo(t0 - d, t1 - d); });
  document.getElementById("wave-right").addEventListener("click", () => { const d = (t1 - t0) / 4; windowTo(t0 + d, t1 + d); });
  const tickAt = (e) => {
    const x = e.clientX - canvas.getBoundingClientRect().left - LABEL;
    return t0 + (Math.max(0, x) / (canvas.clientWidth - LABEL)) * (t1 - t0);
  };
  canvas.addEventListener("wheel", (e) => { e.preventDefault(); zoom(e.deltaY < 0 ? 0.7 : 1.4, tickAt(e)); }, { passive: false });
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, t0, t1, moved: false }; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x;
    if (Math.abs(dx) > 3) drag.moved = true;
    if (drag.moved) { const dt = (dx / (canvas.clientWidth - LABEL)) * (drag.t1 - drag.t0); t0 = Math.max(0, drag.t0 - dt); t1 = t0 + (drag.t1 - drag.t0); draw(); }
  });
  window.addEventListener("mouseup", (e) => {
    if (!drag) return;
    const moved = drag.moved; drag = null;
    if (moved) refresh(); else if (e.target === canvas) placeCursor(tickAt(e));
  });

  // -- opening at a time ---------------------------------------------------------------------
  function goto(ns) {
    const ticks = (ns * 1e-9) / info.timescale_s;
    const span = Math.max((t1 - t0) / 4, 100 / (info.timescale_s / 1e-9));
    t0 = Math.max(0, ticks - span / 2); t1 = t0 + span;
    refresh().then(() => placeCursor(ticks));
    root.scrollIntoView();
  }
  function fromHash() {
    const m = /^#waves-t=([0-9.eE+-]+)$/.exec(location.hash);
    if (m && info) goto(+m[1]);
  }
  window.addEventListener("hashchange", fromHash);
  window.addEventListener("resize", () => refresh());

  hwrepo.json(`${api}/waveform/signals`).then((body) => {
    info = body;
    buildTree();
    const top = info.signals.length ? info.signals[0].name.split(".")[0] : "";
    shown = info.signals.filter((s) => s.name.split(".").length === 2 && s.name.startsWith(top + ".")).slice(0, 8).map((s) => s.name);
    t0 = 0; t1 = Math.max(info.end, 10);
    if (/^#waves-t=/.test(location.hash)) fromHash(); else refresh();
    root.dataset.ready = "true";
  }).catch((err) => { tree.replaceChildren(hwrepo.el("li", { class: "error-box", text: `The waveform could not be read: ${err.message}` })); });
})();
