// Review threads where the page alone cannot place them: on a file, a line number's link picks
// the lines a new thread is about (shift-click: the last one); on the board of a render, a click
// picks the point (x, y in the board's millimetres) and the threads' points are drawn on it.
"use strict";
(() => {
  const start = document.getElementById("thread-line-start");
  const end = document.getElementById("thread-line-end");
  if (start) {
    const pick = (line, last) => {
      if (last && start.value) end.value = Math.max(line, +start.value);
      else { start.value = line; end.value = ""; }
    };
    for (const link of document.querySelectorAll("#code .ln > a")) {
      link.addEventListener("click", (e) => pick(+link.textContent, e.shiftKey));
    }
    const at = /^#L(\d+)$/.exec(location.hash);
    if (at) pick(+at[1], false);
  }

  const board = document.getElementById("point-board");
  const dataNode = document.getElementById("point-data");
  if (!board || !dataNode) return;
  const data = JSON.parse(dataNode.textContent);
  const image = document.getElementById("point-image");
  const form = document.getElementById("new-point-thread");
  let box = null; // the render's viewBox
  // a board render is cut to the board with a margin: board mm -> the render's coordinates
  const dx = () => (box[2] - data.size[0]) / 2 - data.origin[0];
  const dy = () => (box[3] - data.size[1]) / 2 - data.origin[1];
  function place(x, y, cls) {
    const dot = hwrepo.el("span", { class: cls });
    dot.style.left = `${((x + dx() - box[0]) / box[2]) * 100}%`;
    dot.style.top = `${((y + dy() - box[1]) / box[3]) * 100}%`;
    board.append(dot);
    return dot;
  }
  fetch(data.url, { credentials: "same-origin" }).then((r) => r.text()).then((text) => {
    const root = new DOMParser().parseFromString(text, "image/svg+xml").documentElement;
    box = (root.getAttribute("viewBox") || "0 0 100 100").split(/[\s,]+/).map(Number);
    for (const t of document.querySelectorAll("#point-threads .point-thread")) {
      if (t.dataset.layer === data.layer) place(+t.dataset.x, +t.dataset.y, "point-marker");
    }
    board.dataset.ready = "true";
  });
  if (!form) return;
  let chosen = null;
  image.addEventListener("click", (e) => {
    if (!box) return;
    const r = image.getBoundingClientRect();
    const x = box[0] + ((e.clientX - r.left) / r.width) * box[2] - dx();
    const y = box[1] + ((e.clientY - r.top) / r.height) * box[3] - dy();
    document.getElementById("point-x").value = x.toFixed(3);
    document.getElementById("point-y").value = y.toFixed(3);
    document.getElementById("point-at").textContent = `(${x.toFixed(2)}, ${y.toFixed(2)}) mm`;
    if (chosen) chosen.remove();
    chosen = place(x, y, "point-marker chosen");
    form.hidden = false;
    form.querySelector("textarea").focus();
  });
})();
