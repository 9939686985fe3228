// The page of `sisr serve`: uploads files to a job, polls its state, shows and compares the results.
// Plain JavaScript, no library, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];
let chosen = [];   // File objects picked or dropped
let job = null;    // id of this page's job
let timer = null;
const cards = new Map();  // file index -> card element
const said = new Set();   // messages shown for this job, each once

async function api(method, url, body, headers) {
  const response = await fetch(url, {method, body, headers});
  let data = {};
  try { data = await response.json(); } catch (e) { data = {error: `${url}: ${response.status}`}; }
  return {ok: response.ok, data};
}

function say(text) {
  if (said.has(text)) return;
  said.add(text);
  const li = document.createElement("li");
  li.textContent = text;
  $("messages").appendChild(li);
}

function fillModels() {
  const scale = $("scale").value;
  const keep = $("model").value;
  $("model").textContent = "";
  for (const m of models) {
    if (scale && String(m.scale) !== scale) continue;
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = `${m.name} (x${m.scale})`;
    $("model").appendChild(option);
  }
  if ([...$("model").options].some((o) => o.value === keep)) $("model").value = keep;
}

async function init() {
  const {data} = await api("GET", "/api/config");
  models = data.models;
  fillModels();
  if (models.some((m) => m.name === "seemore-t-x4")) $("model").value = "seemore-t-x4";
  for (const p of data.precisions) {
    const option = document.createElement("option");
    option.value = option.textContent = p;
    $("precision").appendChild(option);
  }
  $("precision").value = data.precision;
  $("scale").addEventListener("change", fillModels);
  $("files").addEventListener("change", () => pick($("files").files));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    pick(e.dataTransfer.files);
  });
  $("start").addEventListener("click", start);
  $("cancel").addEventListener("click", () => job && api("POST", `/api/jobs/${job}/cancel`));
}

function pick(files) {
  chosen = [...files];
  $("drop-text").textContent = chosen.length
    ? chosen.map((f) => f.name).join(", ") : "Drop images here or click to choose";
}

async function start() {
  if (!chosen.length) { say("Choose one or more images first."); return; }
  $("messages").textContent = "";
  said.clear();
  $("results").textContent = "";
  cards.clear();
  $("zip").hidden = true;
  const tile = $("tile").value.trim();
  const settings = {model: $("model").value, precision: $("precision").value,
                    tile: tile ? Number(tile) : null};
  const created = await api("POST", "/api/jobs", JSON.stringify(settings),
                            {"Content-Type": "application/json"});
  if (!created.ok) { say(created.data.error); return; }
  job = created.data.id;
  $("start").disabled = true;
  $("cancel").disabled = false;
  for (const file of chosen) {
    $("queue").textContent = `uploading ${file.name}`;
    const sent = await api("PUT", `/api/jobs/${job}/files?name=${encodeURIComponent(file.name)}`, file);
    if (!sent.ok) say(sent.data.error);
  }
  await api("POST", `/api/jobs/${job}/start`);
  poll();
}

async function poll() {
  clearTimeout(timer);
  const {ok, data} = await api("GET", `/api/jobs/${job}`);
  if (!ok) { say(data.error); finish(); return; }
  show(data);
  if (["done", "cancelled", "failed"].includes(data.state)) finish();
  else timer = setTimeout(poll, 250);
}

function finish() {
  $("start").disabled = false;
  $("cancel").disabled = true;
}

function show(state) {
  const total = state.files.length || 1;
  const finished = state.files.filter((f) => !["waiting", "running"].includes(f.state)).length;
  const [done, tiles] = state.tiles;
  const part = state.current !== null && tiles ? done / tiles : 0;
  $("progress").value = state.state === "done" ? 1 : Math.min(1, (finished + part) / total);
  const text = {
    queued: () => state.ahead === 1 ? "1 ahead of you" : `${state.ahead} ahead of you`,
    running: () => state.current === null ? "starting" :
      `image ${state.current + 1} of ${total}` + (tiles ? `, tile ${done} of ${tiles}` : ""),
    done: () => "done",
    cancelled: () => "cancelled",
    failed: () => "failed",
    uploading: () => "uploading",
  }[state.state]();
  $("queue").textContent = text;
  if (state.error) say(state.error);
  for (const file of state.files) showFile(state, file);
  if (state.files.some((f) => f.download)) {
    $("zip").href = `/api/jobs/${state.id}/zip`;
    $("zip").hidden = false;
  }
}

function showFile(state, file) {
  let card = cards.get(file.index);
  if (!card) {
    card = document.createElement("article");
    card.className = "result";
    card.dataset.index = file.index;
    card.innerHTML = `<h2></h2><p class="info"></p><p class="error"></p>`;
    card.querySelector("h2").textContent = file.name;
    $("results").appendChild(card);
    cards.set(file.index, card);
  }
  card.dataset.state = file.state;
  card.querySelector(".error").textContent = file.error || "";
  if (file.state === "done" && !card.querySelector(".compare")) {
    const [w, h] = file.input_size, [W, H] = file.output_size;
    card.querySelector(".info").textContent =
      `${w}×${h} → ${W}×${H}, x${state.scale}, ${state.model}, ${file.seconds.toFixed(2)} s`;
    card.appendChild(compare(file, state));
  } else if (file.state !== "done") {
    card.querySelector(".info").textContent = file.state;
  }
}

function compare(file, state) {
  // The input (nearest neighbour) and the result or bicubic over the same region, split by a slider.
  const [W, H] = file.output_size;
  const box = document.createElement("div");
  box.innerHTML = `
    <div class="tools">
      <label>Show <select class="view"><option value="result">${state.model}</option>
        <option value="bicubic">bicubic</option></select></label>
      <label>Zoom <select class="zoom"><option value="1">1</option><option value="2">2</option><option value="4">4</option>
        <option value="8">8</option></select>×</label>
      <label>Layout <select class="layout"><option value="slider">slider</option>
        <option value="side">side by side</option></select></label>
      <label class="split">Split <input class="slider" type="range" min="0" max="100" value="50"></label>
      <a class="download">Download</a>
    </div>
    <div class="panes">
      <div class="compare">
        <div class="stage"><img class="after" alt="result"><img class="before" alt="input">
          <div class="handle"></div>
          <span class="tag left">input</span><span class="tag right"></span></div>
      </div>
      <div class="compare side" hidden>
        <div class="stage"><img class="before-side" alt="input"><span class="tag left">input</span></div>
      </div>
    </div>`;
  const q = (s) => box.querySelector(s);
  const link = q(".download");
  link.href = file.download;
  link.download = file.download_name;
  q(".before").src = q(".before-side").src = file.previews.input;
  const view = () => {
    q(".after").src = file.previews[q(".view").value];
    q(".tag.right").textContent = q(".view").value === "bicubic" ? "bicubic" : state.model;
  };
  const zoom = () => {
    const z = Number(q(".zoom").value);
    for (const stage of box.querySelectorAll(".stage")) {
      stage.style.width = `${W * z}px`;
      stage.style.height = `${H * z}px`;
    }
  };
  const split = () => {
    const v = Number(q(".slider").value);
    q(".before").style.clipPath = `inset(0 ${100 - v}% 0 0)`;
    q(".handle").style.left = `${v}%`;
  };
  const layout = () => {
    const side = q(".layout").value === "side";
    q(".compare.side").hidden = !side;
    q(".before").hidden = q(".handle").hidden = side;
    q(".split").hidden = side;
    q(".tag.left").hidden = side;
  };
  // Side by side, both panes scroll together so that they show the same region.
  const [one, two] = box.querySelectorAll(".compare");
  one.addEventListener("scroll", () => { two.scrollLeft = one.scrollLeft; two.scrollTop = one.scrollTop; });
  two.addEventListener("scroll", () => { one.scrollLeft = two.scrollLeft; one.scrollTop = two.scrollTop; });
  q(".view").addEventListener("change", view);
  q(".zoom").addEventListener("change", zoom);
  q(".slider").addEventListener("input", split);
  q(".layout").addEventListener("change", layout);
  view(); zoom(); split(); layout();
  return box;
}

init();
