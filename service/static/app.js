// The web client of POST /predict: upload a photo, draw every face's box, age and interval, plot the selected
// face's probability of each age with its interval shaded, and show P(age >= N) for an age N the user picks.
// Plain browser JavaScript, no build step, no dependencies.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

const state = { bitmap: null, faces: [], selected: 0, file: null };
// The API key, when the server asks for one (401): kept for this tab only, sent as a bearer token.
const KEY_STORE = "age-estimation-api-key";

const el = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const status = el("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// "35 (29-42)": the estimate and its interval, in years.
function ageText(face) {
  const [low, high] = face.age_interval;
  return `${face.result_value} (${low}-${high})`;
}

function percent(p) {
  return `${Math.round(p * 1000) / 10}%`;
}

// The query the controls ask for: interval coverage and the "at least" age.
function query() {
  const params = new URLSearchParams({ coverage: el("coverage").value });
  const minAge = el("min-age").value.trim();
  if (minAge !== "") params.set("min_age", minAge);
  return params.toString();
}

// The first age the model can output: result_value minus the number of tasks above the threshold.
function startLabel(face) {
  return face.result_value - face.thresholded_probas.reduce((sum, bit) => sum + bit, 0);
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// A 401: ask for a key (again, if the one kept was refused) and analyse the photo once it is given.
function askForKey(detail) {
  const refused = sessionStorage.getItem(KEY_STORE) !== null;
  sessionStorage.removeItem(KEY_STORE);
  el("key-form").hidden = false;
  el("view").hidden = true;
  setStatus(refused ? `The key was not accepted: ${detail}` : "Enter an API key above to analyse photos.", true);
  el("api-key").focus();
}

async function analyse(file) {
  if (!file) return;
  state.file = file;
  setStatus(`Analysing ${file.name}…`);
  // The server rotates by EXIF before detecting; "from-image" makes the canvas agree with its boxes.
  const bitmapPromise = createImageBitmap(file, { imageOrientation: "from-image" }).catch(() => null);
  const form = new FormData();
  form.append("file", file);
  let response;
  try {
    response = await fetch(`/predict?${query()}`, { method: "POST", body: form, headers: authHeaders() });
  } catch (err) {
    setStatus(`The server could not be reached: ${err}`, true);
    return;
  }
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (response.status === 401) {
    askForKey(body.detail);
    return;
  }
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    setStatus(`${response.status}: ${detail}`, true);
    el("view").hidden = true;
    return;
  }
  state.bitmap = await bitmapPromise;
  state.faces = body.faces;
  state.selected = 0;
  const ages = body.faces.map(ageText).join(", ");
  const calibrated = body.faces[0].calibrated ? "calibrated" : "uncalibrated";
  setStatus(`${body.faces.length} face${body.faces.length === 1 ? "" : "s"} found; estimated age${
    body.faces.length === 1 ? "" : "s"}: ${ages} (${percent(body.faces[0].coverage)} intervals, ${calibrated})`);
  el("view").hidden = false;
  render();
}

function render() {
  drawPhoto();
  listFaces();
  drawCurve(state.faces[state.selected]);
}

function drawPhoto() {
  const canvas = el("photo");
  const ctx = canvas.getContext("2d");
  const { bitmap } = state;
  if (bitmap) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    ctx.drawImage(bitmap, 0, 0);
  } else {
    const right = Math.max(...state.faces.map((face) => face.box[2])) + 20;
    const bottom = Math.max(...state.faces.map((face) => face.box[3])) + 20;
    canvas.width = right;
    canvas.height = bottom;
    ctx.fillStyle = "#ddd";
    ctx.fillRect(0, 0, right, bottom);
  }
  const line = Math.max(2, Math.round(canvas.width / 400));
  ctx.font = `bold ${Math.max(14, Math.round(canvas.width / 45))}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  state.faces.forEach((face, i) => {
    const [left, top, right, bottom] = face.box;
    const color = COLORS[i % COLORS.length];
    ctx.lineWidth = i === state.selected ? line * 2 : line;
    ctx.strokeStyle = color;
    ctx.strokeRect(left, top, right - left + 1, bottom - top + 1);
    const label = ageText(face);
    const width = ctx.measureText(label).width + 8;
    const height = parseInt(ctx.font.split(" ")[1], 10) + 4;
    const y = top >= height ? top : bottom + height;
    ctx.fillStyle = color;
    ctx.fillRect(left - line / 2, y - height, width, height);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, left + 4, y - 2);
  });
}

function listFaces() {
  const list = el("faces");
  list.replaceChildren();
  state.faces.forEach((face, i) => {
    const item = document.createElement("li");
    let text = `Age ${ageText(face)}, ${percent(face.coverage)} interval`;
    if (face.p_at_least !== null && face.p_at_least !== undefined) {
      text += ` · P(age ≥ ${el("min-age").value}) = ${percent(face.p_at_least)}`;
      item.dataset.pAtLeast = String(face.p_at_least);
    }
    if (face.uncertain) text += " · uncertain";
    item.textContent = text;
    item.style.borderLeft = `6px solid ${COLORS[i % COLORS.length]}`;
    item.classList.toggle("selected", i === state.selected);
    item.dataset.age = String(face.result_value);
    item.addEventListener("click", () => select(i));
    list.appendChild(item);
  });
}

function select(index) {
  state.selected = index;
  render();
}

function faceAt(x, y) {
  // Smallest box containing the point, so a face inside a larger box stays clickable.
  let best = -1;
  let bestArea = Infinity;
  state.faces.forEach((face, i) => {
    const [left, top, right, bottom] = face.box;
    const area = (right - left) * (bottom - top);
    if (x >= left && x <= right && y >= top && y <= bottom && area < bestArea) {
      best = i;
      bestArea = area;
    }
  });
  return best;
}

function svg(name, attributes, text) {
  const node = document.createElementNS(SVG_NS, name);
  Object.entries(attributes).forEach(([key, value]) => node.setAttribute(key, String(value)));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawCurve(face) {
  const plot = el("curve");
  plot.replaceChildren();
  if (!face) return;
  const W = 420, H = 260, M = { left: 44, right: 12, top: 14, bottom: 36 };
  const first = startLabel(face);
  const probas = face.age_probas;
  const n = probas.length;
  const top = Math.max(...probas, 1e-9);
  const x = (k) => M.left + (n === 1 ? 0 : (k / (n - 1)) * (W - M.left - M.right));
  const y = (p) => M.top + (1 - p / top) * (H - M.top - M.bottom);
  plot.appendChild(svg("line", { x1: M.left, y1: y(0), x2: W - M.right, y2: y(0), stroke: "#444" }));
  plot.appendChild(svg("line", { x1: M.left, y1: y(0), x2: M.left, y2: y(top), stroke: "#444" }));
  [0, top / 2, top].forEach((p) => {
    plot.appendChild(svg("text", { x: M.left - 6, y: y(p) + 4, "text-anchor": "end", "font-size": 11 },
      percent(p)));
  });
  const ticks = 6;
  for (let t = 0; t <= ticks; t += 1) {
    const k = Math.round((t / ticks) * (n - 1));
    plot.appendChild(svg("text", { x: x(k), y: H - M.bottom + 16, "text-anchor": "middle", "font-size": 11 },
      first + k));
  }
  plot.appendChild(svg("text", { x: (W + M.left) / 2, y: H - 4, "text-anchor": "middle", "font-size": 12 },
    "age (years)"));
  const color = COLORS[state.selected % COLORS.length];
  const [low, high] = face.age_interval.map((age) => Math.min(Math.max(age - first, 0), n - 1));
  const band = [`${x(low).toFixed(1)},${y(0).toFixed(1)}`];
  for (let k = low; k <= high; k += 1) band.push(`${x(k).toFixed(1)},${y(probas[k]).toFixed(1)}`);
  band.push(`${x(high).toFixed(1)},${y(0).toFixed(1)}`);
  const shade = svg("polygon", { points: band.join(" "), fill: color, "fill-opacity": 0.25, class: "interval" });
  shade.appendChild(svg("title", {}, `${face.age_interval[0]}-${face.age_interval[1]} years: ${
    percent(face.coverage)} interval`));
  plot.appendChild(shade);
  const points = probas.map((p, k) => `${x(k).toFixed(1)},${y(p).toFixed(1)}`).join(" ");
  plot.appendChild(svg("polyline", { points, fill: "none", stroke: color, "stroke-width": 2 }));
  const k = Math.min(Math.max(face.result_value - first, 0), n - 1);
  plot.appendChild(svg("line", { x1: x(k), y1: y(0), x2: x(k), y2: y(top), stroke: "#222", "stroke-width": 1 }));
  plot.appendChild(svg("text", { x: x(k) + 4, y: M.top + 10, "font-size": 12, "font-weight": "bold" },
    `estimate: ${ageText(face)}`));
}

function setUp() {
  const input = el("file");
  const drop = el("drop");
  input.addEventListener("change", () => analyse(input.files[0]));
  // A new coverage or age asks the server again: only it holds the calibration.
  ["coverage", "min-age"].forEach((id) => el(id).addEventListener("change", () => analyse(state.file)));
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    analyse(event.dataTransfer.files[0]);
  });
  el("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, el("api-key").value.trim());
    el("api-key").value = "";
    el("key-form").hidden = true;
    if (state.file) analyse(state.file);
    else setStatus("Key kept for this tab; choose a photo.");
  });
  el("photo").addEventListener("click", (event) => {
    const canvas = event.currentTarget;
    const rect = canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) * canvas.width) / rect.width;
    const y = ((event.clientY - rect.top) * canvas.height) / rect.height;
    const index = faceAt(x, y);
    if (index >= 0) select(index);
  });
}

setUp();
