// hetsearch web page: pick or drop an image, POST it to /search, show the top-k gallery items.
"use strict";

const $ = (id) => document.getElementById(id);
const fileInput = $("file-input");
const dropZone = $("drop-zone");
const kInput = $("k-input");
const statusLine = $("status");
let currentFile = null;
let queryUrl = null;

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

// Server warnings (e.g. --allow-incompatible) stay on screen for the whole session.
function showWarnings(warnings) {
  const box = $("warnings");
  box.replaceChildren(...warnings.map((text) => {
    const p = document.createElement("p");
    p.textContent = `warning: ${text}`;
    return p;
  }));
  box.hidden = warnings.length === 0;
}

const STATUS_TEXT = {
  400: "the image could not be read",
  404: "not found",
  413: "too large",
  415: "not a supported image",
  422: "invalid request",
};

// One readable line from an error answer: {"detail": "text"} or FastAPI's validation list.
function errorMessage(status, body) {
  const prefix = `${status}${STATUS_TEXT[status] ? ` (${STATUS_TEXT[status]})` : ""}`;
  const detail = body && body.detail;
  if (typeof detail === "string" && detail) return `${prefix}: ${detail}`;
  if (Array.isArray(detail) && detail.length) {
    const parts = detail.map((d) => {
      const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
      return where ? `${where}: ${d.msg}` : String(d.msg || "invalid value");
    });
    return `${prefix}: ${parts.join("; ")}`;
  }
  return `${prefix}: the server answered without details`;
}

function clearResults() {
  $("results").replaceChildren();
  $("timings").textContent = "";
}

async function loadHealth() {
  try {
    const response = await fetch("/health");
    const health = await response.json();
    const q = health.query_model;
    $("query-model").textContent = q.model_id;
    $("query-flops").textContent = q.mflops === null ? "unknown" : `${q.mflops.toFixed(2)} MFLOPs`;
    $("query-runtime").textContent = q.runtime;
    $("gallery-model").textContent = health.gallery_model.model_id;
    $("gallery-items").textContent = `${health.items} items (${health.index.index_type} index)`;
    kInput.max = health.max_k;
    showWarnings(health.warnings || []);
  } catch (err) {
    setStatus(`cannot reach the server: ${err}`, true);
  }
}

function card(hit) {
  const li = document.createElement("li");
  li.className = "card";
  li.dataset.itemId = hit.id;
  const img = document.createElement("img");
  img.src = hit.image_url;
  img.alt = hit.label ? `gallery item ${hit.id}: ${hit.label}` : `gallery item ${hit.id}`;
  img.loading = "lazy";
  const rank = document.createElement("div");
  rank.className = "rank";
  rank.textContent = `#${hit.rank} · id ${hit.id}`;
  const label = document.createElement("div");
  label.className = "label";
  label.textContent = hit.label ?? "(no label)";
  const score = document.createElement("div");
  score.className = "score";
  score.textContent = `score ${hit.score.toFixed(4)}`;
  const source = document.createElement("div");
  source.className = "source";
  source.textContent = hit.source;
  source.title = hit.source;
  li.append(img, rank, label, score, source);
  return li;
}

async function search() {
  if (!currentFile) return;
  const form = new FormData();
  form.append("file", currentFile, currentFile.name || "query");
  form.append("k", String(kInput.value || 10));
  setStatus("searching…");
  $("timings").textContent = "";
  const started = performance.now();
  let response, body = null;
  try {
    response = await fetch("/search", { method: "POST", body: form });
  } catch (err) {
    setStatus(`request failed: ${err}`, true);
    clearResults();
    return;
  }
  try {
    body = await response.json();
  } catch (err) {
    body = null;  // e.g. a proxy's HTML error page
  }
  if (!response.ok || !body) {
    setStatus(errorMessage(response.status, body), true);
    clearResults();
    return;
  }
  const elapsed = performance.now() - started;
  const t = body.timings;
  $("timings").textContent = `(${body.results.length} of k=${body.k}; server ${t.total_ms.toFixed(1)} ms: ` +
    `embed ${t.embed_ms.toFixed(1)} ms, search ${t.search_ms.toFixed(1)} ms; round trip ${elapsed.toFixed(0)} ms)`;
  $("results").replaceChildren(...body.results.map(card));
  setStatus(`query model ${body.query_model} → gallery model ${body.gallery_model}`);
}

function useFile(file) {
  if (!file) return;
  currentFile = file;
  if (queryUrl) URL.revokeObjectURL(queryUrl);
  queryUrl = URL.createObjectURL(file);
  const preview = $("query-image");
  preview.hidden = false;
  preview.src = queryUrl;
  $("query-caption").textContent = `${file.name} (${file.size} bytes)`;
  $("query-figure").hidden = false;
  search();
}

// A file the browser cannot display (not an image, or a format it lacks): say so, no broken icon.
$("query-image").addEventListener("error", () => {
  if (!currentFile) return;
  $("query-image").hidden = true;
  $("query-caption").textContent = `${currentFile.name} (${currentFile.size} bytes): the browser cannot ` +
    "show this file as an image";
});

fileInput.addEventListener("change", () => useFile(fileInput.files[0]));
kInput.addEventListener("change", search);
for (const type of ["dragenter", "dragover"]) {
  dropZone.addEventListener(type, (event) => { event.preventDefault(); dropZone.classList.add("dragging"); });
}
for (const type of ["dragleave", "drop"]) {
  dropZone.addEventListener(type, () => dropZone.classList.remove("dragging"));
}
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  useFile(event.dataTransfer.files[0]);
});
dropZone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); fileInput.click(); }
});
loadHealth();
