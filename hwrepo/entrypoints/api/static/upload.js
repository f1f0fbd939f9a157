// The upload page: files, a folder or an archive, dropped or chosen, sent to the API as one
// revision with a progress bar; then the new revision's page.
"use strict";
(() => {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const zone = document.getElementById("dropzone"), start = document.getElementById("upload-start");
  const chosenText = document.getElementById("upload-chosen"), bar = document.getElementById("upload-progress");
  const error = document.getElementById("upload-error");
  const ARCHIVE = /\.(zip|tar|tar\.gz|tgz)$/i;
  let chosen = []; // [path, File]

  function setChosen(list) {
    chosen = list.filter(([path]) => path && !path.split("/").some((p) => p === ".git" || p === "__pycache__"));
    const size = chosen.reduce((n, [, f]) => n + f.size, 0);
    chosenText.textContent = chosen.length ? `${chosen.length} file${chosen.length === 1 ? "" : "s"}, ${size} bytes: ${chosen.slice(0, 5).map(([p]) => p).join(", ")}${chosen.length > 5 ? ", …" : ""}` : "Nothing chosen.";
    start.disabled = !chosen.length;
  }
  // a dropped folder: walk it, keeping paths relative to it
  function walk(entry, prefix) {
    return new Promise((resolve) => {
      if (entry.isFile) entry.file((f) => resolve([[prefix + f.name, f]]), () => resolve([]));
      else if (entry.isDirectory) {
        const reader = entry.createReader(), all = [];
        const next = () => reader.readEntries(async (batch) => {
          if (!batch.length) { const nested = await Promise.all(all.map((e) => walk(e, prefix + entry.name + "/"))); resolve(nested.flat()); }
          else { all.push(...batch); next(); }
        }, () => resolve([]));
        next();
      } else resolve([]);
    });
  }
  const stripTop = (list) => {
    // a single dropped folder is the revision's root
    const tops = new Set(list.map(([p]) => p.split("/")[0]));
    return tops.size === 1 && list.every(([p]) => p.includes("/")) ? list.map(([p, f]) => [p.slice(p.indexOf("/") + 1), f]) : list;
  };
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault(); zone.classList.remove("over");
    const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    if (entries.length) setChosen(stripTop((await Promise.all(entries.map((en) => walk(en, "")))).flat()));
    else setChosen([...e.dataTransfer.files].map((f) => [f.name, f]));
  });
  document.getElementById("pick-files").addEventListener("change", (e) => setChosen([...e.target.files].map((f) => [f.name, f])));
  document.getElementById("pick-folder").addEventListener("change", (e) => setChosen(stripTop([...e.target.files].map((f) => [f.webkitRelativePath || f.name, f]))));

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const project = document.getElementById("upload-project").value;
    const body = new FormData();
    body.append("message", document.getElementById("upload-message").value);
    for (const [path, file] of chosen) body.append(ARCHIVE.test(path) && chosen.length === 1 ? "archive" : "files", file, path);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1/projects/${project}/revisions`);
    xhr.setRequestHeader("X-CSRF-Token", hwrepo.csrf());
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false; bar.value = 0; error.hidden = true; start.disabled = true;
    xhr.upload.addEventListener("progress", (ev) => { if (ev.lengthComputable) bar.value = (100 * ev.loaded) / ev.total; });
    xhr.addEventListener("load", () => {
      let reply = {};
      try { reply = JSON.parse(xhr.responseText); } catch (_) {}
      if (xhr.status === 201 || xhr.status === 200) { bar.value = 100; location.assign(`/${project}/revisions/${reply.number}`); }
      else { error.hidden = false; error.textContent = reply.detail || `the upload failed (${xhr.status})`; start.disabled = false; }
    });
    xhr.addEventListener("error", () => { error.hidden = false; error.textContent = "the upload did not reach the server"; start.disabled = false; });
    xhr.send(body);
  });
})();
