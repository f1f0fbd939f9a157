// The comparison page: a changed file's unified diff on request (its lines as text, coloured by
// their first character), and each pair of renders overlaid with a slider or blinking.
"use strict";
(() => {
  for (const button of document.querySelectorAll("button.show-diff")) {
    button.addEventListener("click", async () => {
      const row = button.closest("tr").nextElementSibling;
      const pre = row.querySelector("pre.diff");
      if (!row.hidden) { row.hidden = true; button.textContent = "Show the diff"; return; }
      row.hidden = false;
      button.textContent = "Hide the diff";
      if (pre.dataset.loaded) return;
      pre.textContent = "loading…";
      try {
        const body = await hwrepo.json(button.dataset.url);
        if (body.binary) { pre.textContent = "a binary file"; return; }
        const lines = (body.diff || "").split("\n");
        if (lines[lines.length - 1] === "") lines.pop();
        pre.replaceChildren(...lines.map((line) => {
          const kind = line.startsWith("@@") ? "hunk" : line.startsWith("+++") || line.startsWith("---") ? "head"
            : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "ctx";
          return hwrepo.el("span", { class: `dl ${kind}`, text: line + "\n" });
        }));
        if (!lines.length) pre.textContent = "no difference in the text";
        pre.dataset.loaded = "true";
      } catch (error) {
        pre.textContent = `the diff could not be made: ${error.message}`;
      }
    });
  }
  for (const view of document.querySelectorAll(".view-compared")) {
    const over = view.querySelector(".overlay img.over");
    const slider = view.querySelector(".overlay-slider");
    if (!over || !slider) continue;
    // the newer revision shows right of the slider's position
    const clip = () => { over.style.clipPath = `inset(0 0 0 ${slider.value}%)`; };
    slider.addEventListener("input", clip);
    clip();
    let timer = null;
    const blink = view.querySelector("button.blink");
    blink.addEventListener("click", () => {
      if (timer) {
        clearInterval(timer); timer = null; blink.textContent = "Blink"; clip();
        over.style.visibility = "visible";
        return;
      }
      over.style.clipPath = "none";
      blink.textContent = "Stop";
      timer = setInterval(() => { over.style.visibility = over.style.visibility === "hidden" ? "visible" : "hidden"; }, 600);
    });
  }
})();
