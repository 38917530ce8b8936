// orbitseg label - the page.  Plain JS, no build step.
// The label volume of the open case lives here (Uint8Array, canonical (nz, ny, nx)); the server
// sends raw slices and runs SmartPencil / SmartFill / AutoCorrection on slabs of it.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  info: null, cases: [], caseId: null, meta: null,
  nz: 0, ny: 0, nx: 0, sp: [1, 1, 1],
  label: null, strokes: null, version: "none", dirty: false, saving: false, editSeq: 0,
  k: 0, j: 0, i: 0,
  zoom: 1, panX: 0, panY: 0,
  // where the orbits are (server: meta.orbits; canonical (k, j, i) lo/hi), and whether the side views crop to them
  orbits: null, sideCrop: false,
  level: 48, width: 400, opacity: 0.5, visible: { 1: true, 2: true, 3: true }, overlay: true,
  active: 1, tool: "pencil", brush: 6,
  undo: [], redo: [],
  slices: new Map(), borders: new Map(),
  busy: 0, autosaveMs: 4000,
};
const MAX_UNDO = 64;
let colours = {};

// ---------------------------------------------------------------- helpers
function showMessage(text, kind = "info", actions = []) {
  const m = $("message");
  m.textContent = text;
  m.className = "message" + (kind === "error" ? " error" : "");
  for (const [label, fn] of actions) {
    const b = document.createElement("button");
    b.textContent = label;
    b.onclick = () => { m.hidden = true; fn(); };
    m.appendChild(b);
  }
  const close = document.createElement("button");
  close.textContent = "×";
  close.onclick = () => { m.hidden = true; };
  m.appendChild(close);
  m.hidden = false;
}

let busyTimer = null;
function busyStart(text) {
  S.busy++;
  $("busy-text").textContent = text || "working…";
  if (!busyTimer) busyTimer = setTimeout(() => { if (S.busy > 0) $("busy").hidden = false; }, 120);
}
function busyEnd() {
  S.busy = Math.max(0, S.busy - 1);
  if (S.busy === 0) { $("busy").hidden = true; clearTimeout(busyTimer); busyTimer = null; }
}

// `read` consumes the response body while the page still counts as busy, so "idle" means
// the answer has arrived in full (not just its headers)
async function api(path, opts = {}, text = null, read = (r) => r) {
  busyStart(text);
  try {
    const r = await fetch(path, opts);
    if (!r.ok) {
      let msg = `${r.status} ${r.statusText}`, body = null;
      try { body = await r.json(); msg = body.message || msg; } catch (e) { /* not JSON */ }
      const err = new Error(msg); err.status = r.status; err.body = body; throw err;
    }
    return await read(r);
  } finally { busyEnd(); }
}
async function apiJSON(path, opts, text) { return api(path, opts, text, (r) => r.json()); }
async function apiBytes(path, opts, text) { return api(path, opts, text, async (r) => new Uint8Array(await r.arrayBuffer())); }

function reportError(e, what) {
  console.error(e);
  showMessage(`${what}: ${e.message}`, "error");
}

// ---------------------------------------------------------------- cases
async function loadInfo() {
  S.info = await apiJSON("/api/info");
  $("dataset").textContent = S.info.dataset;
  const pal = $("palette");
  pal.innerHTML = "";
  for (const l of S.info.labels) {
    colours[l.id] = l.rgb;
    const d = document.createElement("div");
    d.className = "swatch"; d.dataset.label = l.id;
    d.innerHTML = `<input type="checkbox" checked title="show / hide"><span class="chip" style="background:${l.colour}"></span><span>${l.id} ${l.title}</span>`;
    d.querySelector("input").onclick = (ev) => { ev.stopPropagation(); S.visible[l.id] = ev.target.checked; render(); };
    d.onclick = () => setActive(l.id);
    pal.appendChild(d);
  }
  const pr = $("presets");
  for (const [name, w] of Object.entries(S.info.window_presets)) {
    const b = document.createElement("button");
    b.textContent = `${name.replace("_", " ")} ${w.level}/${w.width}`;
    b.onclick = () => setWindow(w.level, w.width);
    pr.appendChild(b);
  }
  if (!S.info.model) $("predict").title = "No model configured: start with `orbitseg label DATASET --model CKPT`";
  setWindow(S.info.window_presets.orbit.level, S.info.window_presets.orbit.width);
  setActive(1); setTool("pencil");
}

async function loadCases() {
  const r = await apiJSON("/api/cases");
  S.cases = r.cases;
  const tb = document.querySelector("#cases tbody");
  tb.innerHTML = "";
  for (const c of S.cases) {
    const tr = document.createElement("tr");
    tr.className = "case" + (c.id === S.caseId ? " active" : "");
    tr.dataset.case = c.id;
    const vols = c.volumes_ml ? [1, 2, 3].map((s) => c.volumes_ml[s].toFixed(2)).join(" / ") : "–";
    tr.innerHTML = `<td>${esc(c.id)}${flagBadge(c.quality)}<br><small>${c.split}</small></td><td class="st-${c.status}">${c.status.replace("_", " ")}</td><td>${vols}</td>`;
    tr.onclick = () => openCase(c.id);
    tb.appendChild(tr);
    if (c.quality && c.quality.flags.length) {
      const q = document.createElement("tr");
      q.className = "flag-row";
      q.innerHTML = `<td colspan="3" class="flag-line" data-testid="flag-line" title="${esc(flagTitle(c.quality))}">${esc(c.quality.summary)}${draftNote(c.quality)}</td>`;
      tb.appendChild(q);
    }
    if (c.problem) {
      const p = document.createElement("tr");
      p.innerHTML = `<td colspan="3" class="problem" data-testid="problem">⚠ ${esc(c.problem)}</td>`;
      tb.appendChild(p);
    }
  }
}
// the model's quality flags of a case (its last Predict): a badge with their count, the messages in its tooltip
function flagBadge(q) {
  if (!q) return "";
  const n = q.flags.length;
  if (!n) return ` <span class="flags ok" data-testid="flags" data-count="0" title="${esc(flagTitle(q))}">✓</span>`;
  return ` <span class="flags" data-testid="flags" data-count="${n}" title="${esc(flagTitle(q))}">⚑ ${n}</span>`;
}
function flagTitle(q) {
  const head = `Quality flags of the model's draft (${q.model || "model"}, ${q.time || ""})`;
  if (!q.flags.length) return `${head}: nothing flagged.`;
  return `${head}:\n` + q.flags.map((f) => `• ${f.side}: ${f.message}`).join("\n");
}
function draftNote(q) {
  return q.saved === false ? " <small>(of the model's draft; the saved label was corrected since)</small>"
    : q.saved === null ? " <small>(draft not saved yet)</small>" : "";
}
// ---------------------------------------------------------------- clinical measurements (issue 22)
// [column, row title, unit, digits]; values outside the adult reference ranges are highlighted
const MEASURES = [
  ["globe_ml", "Globe", "mL", 2], ["muscles_ml", "Muscles", "mL", 2], ["nerve_ml", "Nerve", "mL", 2],
  ["sr_thickness_mm", "SR group", "mm", 1], ["ir_thickness_mm", "IR", "mm", 1],
  ["mr_thickness_mm", "MR", "mm", 1], ["lr_thickness_mm", "LR", "mm", 1], ["proptosis_mm", "Proptosis", "mm", 1],
];
const MEASURE_HELP = {
  sr_thickness_mm: "superior muscle group (superior rectus + levator), maximal thickness",
  ir_thickness_mm: "inferior rectus, maximal thickness", mr_thickness_mm: "medial rectus, maximal thickness",
  lr_thickness_mm: "lateral rectus, maximal thickness",
  proptosis_mm: "globe protrusion beyond the interzygomatic line (CT)",
};
let measureSeq = 0;
async function loadMeasurements() {
  const id = S.caseId, seq = ++measureSeq;
  if (!id) return;
  let m;
  try { m = await apiJSON(`/api/cases/${encodeURIComponent(id)}/measurements`, {}, "measuring the orbits…"); }
  catch (e) { if (seq === measureSeq) $("measures").innerHTML = `<p class="problem">⚠ ${esc(e.message)}</p>`; return; }
  if (seq === measureSeq && id === S.caseId) renderMeasurements(m);
}
function renderMeasurements(m) {
  const el = $("measures");
  el.dataset.source = m.source || "";
  if (!m.rows) { el.innerHTML = `<p class="hint">${esc(m.notice)}</p>`; return; }
  const row = (side) => m.rows.find((r) => r.side === side) || {};
  const R = row("right"), L = row("left"), D = row("left_minus_right_ml");
  // "mr_thickness_mm 5.6 > 5" -> {mr_thickness_mm: "..."}: why a value is highlighted
  const reasons = (r) => Object.fromEntries((r.outside_reference || "").split("; ").filter(Boolean)
    .map((t) => [t.split(" ")[0], t]));
  const why = { right: reasons(R), left: reasons(L), diff: reasons(D) };
  const ref = (k) => (m.reference && m.reference[k]) ? m.reference[k] : null;
  const cell = (v, digits, reason, extra = "") => {
    const txt = v === null || v === undefined ? "–" : (Math.abs(v) < 0.5 * 10 ** -digits ? 0 : v).toFixed(digits);
    return reason ? `<td class="out" title="${esc(reason)}${esc(extra)}">${txt}</td>` : `<td>${txt}</td>`;
  };
  let html = `<div class="src" data-testid="measures-source" title="${m.version ? "label version " + esc(m.version) : ""}">${esc(m.notice)}</div><table><thead><tr><th></th>`
    + `<th title="the patient's right orbit">R</th><th title="the patient's left orbit">L</th><th title="left − right">L−R</th></tr></thead><tbody>`;
  for (const [k, title, unit, digits] of MEASURES) {
    const r = ref(k);
    const range = r ? ` (adult ${r[0] === null ? "≤ " + r[1] : r[0] + "–" + r[1]} ${unit})` : "";
    const tip = `${MEASURE_HELP[k] || title + " volume"}, ${unit}${range}`;
    const note = r ? `\nadult reference ${r[0] === null ? "≤ " + r[1] : r[0] + "–" + r[1]} ${unit}` : "";
    html += `<tr data-key="${k}"><td title="${esc(tip)}">${title} <small>${unit}</small></td>`
      + cell(R[k], digits, why.right[k], note) + cell(L[k], digits, why.left[k], note)
      + cell(D[k], digits, why.diff[k], k === "proptosis_mm" ? `\na difference over ${m.asymmetry_mm} mm is named` : "") + "</tr>";
  }
  el.innerHTML = html + "</tbody></table>";
}
function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c])); }

async function openCase(id, { keepView = false } = {}) {
  if (S.dirty && S.caseId && S.caseId !== id) {
    try { await save(); } catch (e) { if (!confirm("The current case could not be saved. Open the other case anyway (unsaved edits are lost)?")) return; }
  }
  try {
    const meta = await apiJSON(`/api/cases/${encodeURIComponent(id)}`, {}, "opening case…");
    const lab = await api(`/api/cases/${encodeURIComponent(id)}/label`, {}, "loading label…",
      async (r) => ({ bytes: new Uint8Array(await r.arrayBuffer()), version: r.headers.get("X-Label-Version") }));
    const bytes = lab.bytes;
    S.caseId = id; S.meta = meta;
    [S.nz, S.ny, S.nx] = meta.shape; S.sp = meta.spacing;
    S.label = bytes; S.version = lab.version || meta.version;
    S.strokes = new Uint8Array(S.nz * S.ny * S.nx);
    S.slices.clear(); S.borders.clear(); S.undo = []; S.redo = []; S.dirty = false;
    S.orbits = meta.orbits && meta.orbits.found ? meta.orbits : null;
    if (!keepView) {
      if (S.orbits) { [S.k, S.j, S.i] = S.orbits.centre; frameOrbits(); }
      else {
        S.k = Math.floor(S.nz / 2); S.j = Math.floor(S.ny / 2); S.i = Math.floor(S.nx / 2); wholeView();
        if (meta.orbits && meta.orbits.notice) showMessage(`${id}: ${meta.orbits.notice}`);
      }
    }
    $("case-title").textContent = `${id} (${meta.shape.join("×")}, ${meta.spacing.map((v) => v.toFixed(2)).join("×")} mm)`;
    fillHistory(meta.history);
    updateSaveState();
    document.querySelectorAll("#cases tr.case").forEach((tr) => tr.classList.toggle("active", tr.dataset.case === id));
    loadMeasurements();
    await showSlice();
  } catch (e) { reportError(e, `Cannot open case ${id}`); }
}

function fillHistory(versions) {
  const h = $("history");
  h.innerHTML = `<option value="">History (${versions.length})…</option>`;
  for (const v of versions) {
    const o = document.createElement("option");
    o.value = v.name; o.textContent = v.name.replace(".nii.gz", "");
    h.appendChild(o);
  }
}

// ---------------------------------------------------------------- slices
async function getSlice(axis, index) {
  const key = `${axis}:${index}`;
  if (S.slices.has(key)) return S.slices.get(key);
  const p = (async () => {
    return api(`/api/cases/${encodeURIComponent(S.caseId)}/slice?axis=${axis}&index=${index}`, {}, null,
      async (r) => new Int16Array(await r.arrayBuffer()));
  })();
  S.slices.set(key, p);
  if (S.slices.size > 400) S.slices.delete(S.slices.keys().next().value);
  try { return await p; } catch (e) { S.slices.delete(key); throw e; }
}

async function getBorders(index) {
  const n = $("pencil-n").value, key = `${index}:${n}`;
  if (S.borders.has(key)) return S.borders.get(key);
  const p = apiBytes(`/api/cases/${encodeURIComponent(S.caseId)}/superpixels?index=${index}&n=${n}`, {}, "superpixels…");
  S.borders.set(key, p);
  try { return await p; } catch (e) { S.borders.delete(key); throw e; }
}

async function showSlice() {
  if (!S.caseId) return;
  S.k = Math.max(0, Math.min(S.nz - 1, S.k));
  try {
    await render();
    // prefetch neighbours so scrolling is immediate
    for (const d of [1, -1, 2, -2]) { const z = S.k + d; if (z >= 0 && z < S.nz) getSlice(0, z).catch(() => {}); }
  } catch (e) { reportError(e, "Cannot show slice"); }
}

const off = { axial: document.createElement("canvas"), cor: document.createElement("canvas"), sag: document.createElement("canvas") };

function paint(ctxCanvas, hu, h, w, labelAt, borders) {
  ctxCanvas.width = w; ctxCanvas.height = h;
  const c = ctxCanvas.getContext("2d");
  const img = c.createImageData(w, h), d = img.data;
  const lo = S.level - S.width / 2, scale = 255 / S.width, a = S.opacity;
  for (let p = 0; p < h * w; p++) {
    let g = (hu[p] - lo) * scale; g = g < 0 ? 0 : g > 255 ? 255 : g;
    let r = g, gg = g, b = g;
    const l = labelAt(p);
    if (l && S.overlay && S.visible[l]) {
      const col = colours[l];
      r = r * (1 - a) + col[0] * a; gg = gg * (1 - a) + col[1] * a; b = b * (1 - a) + col[2] * a;
    }
    if (borders && borders[p]) { r = r * 0.65 + 255 * 0.35; gg = gg * 0.65 + 230 * 0.35; b = b * 0.65; }
    const q = 4 * p; d[q] = r; d[q + 1] = gg; d[q + 2] = b; d[q + 3] = 255;
  }
  c.putImageData(img, 0, 0);
  return ctxCanvas;
}

function strokeOverlay(c, k) {
  // strokes drawn as small dots on top (so they are visible but distinct from the mask)
  const base = k * S.ny * S.nx; let any = false;
  const ctx = c.getContext("2d"), img = ctx.getImageData(0, 0, S.nx, S.ny), d = img.data;
  for (let p = 0; p < S.ny * S.nx; p++) {
    const s = S.strokes[base + p];
    if (!s) continue;
    any = true;
    const col = s === 255 ? [60, 140, 255] : colours[s];
    const q = 4 * p; d[q] = col[0]; d[q + 1] = col[1]; d[q + 2] = col[2];
  }
  if (any) ctx.putImageData(img, 0, 0);
}

function axialTransform() {
  const cv = $("axial");
  const ax = S.sp[2], ay = S.sp[1];  // mm per pixel along x (cols) and y (rows)
  const base = Math.min(cv.width / (S.nx * ax), cv.height / (S.ny * ay));
  const sx = base * ax * S.zoom, sy = base * ay * S.zoom;
  const ox = (cv.width - S.nx * sx) / 2 + S.panX, oy = (cv.height - S.ny * sy) / 2 + S.panY;
  return { sx, sy, ox, oy };
}

async function render() {
  if (!S.caseId) return;
  const k = S.k, ny = S.ny, nx = S.nx, nz = S.nz;
  const hu = await getSlice(0, k);
  if (k !== S.k) return;
  let borders = null;
  if (S.tool === "pencil" && $("show-borders").checked) {
    try { borders = await getBorders(k); } catch (e) { reportError(e, "Superpixels"); }
    if (k !== S.k) return;
  }
  const base = k * ny * nx;
  paint(off.axial, hu, ny, nx, (p) => S.label[base + p], borders);
  strokeOverlay(off.axial, k);
  const cv = $("axial"), ctx = cv.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, cv.width, cv.height);
  ctx.imageSmoothingEnabled = false;
  const t = axialTransform();
  ctx.drawImage(off.axial, t.ox, t.oy, nx * t.sx, ny * t.sy);
  // crosshair of the coronal / sagittal planes
  ctx.strokeStyle = "rgba(80,200,255,0.35)"; ctx.lineWidth = 1; ctx.beginPath();
  ctx.moveTo(t.ox, t.oy + (S.j + 0.5) * t.sy); ctx.lineTo(t.ox + nx * t.sx, t.oy + (S.j + 0.5) * t.sy);
  ctx.moveTo(t.ox + (S.i + 0.5) * t.sx, t.oy); ctx.lineTo(t.ox + (S.i + 0.5) * t.sx, t.oy + ny * t.sy);
  ctx.stroke();
  // canonical LPS: patient right on the image's left, anterior at the top
  ctx.fillStyle = "rgba(255,255,255,0.7)"; ctx.font = "13px sans-serif"; ctx.textAlign = "center";
  ctx.fillText("A", cv.width / 2, 32); ctx.fillText("P", cv.width / 2, cv.height - 6);
  ctx.fillText("R", 10, cv.height / 2); ctx.fillText("L", cv.width - 10, cv.height / 2); ctx.textAlign = "start";
  $("slice-info").textContent = `axial ${k + 1}/${nz}   W ${Math.round(S.width)} L ${Math.round(S.level)}   zoom ${S.zoom.toFixed(2)}`
    + (S.orbits ? `   orbits: ${S.orbits.source === "labels" ? "from labels" : "found"}` : "   orbits: not found");
  renderSide().catch((e) => console.warn(e));
}

async function renderSide() {
  const [cor, sag] = await Promise.all([getSlice(1, S.j), getSlice(2, S.i)]);
  const ny = S.ny, nx = S.nx, nz = S.nz;
  // coronal: rows = z (flipped so superior is up), cols = x
  const corFlip = new Int16Array(nz * nx), sagFlip = new Int16Array(nz * ny);
  for (let z = 0; z < nz; z++) {
    corFlip.set(cor.subarray(z * nx, (z + 1) * nx), (nz - 1 - z) * nx);
    sagFlip.set(sag.subarray(z * ny, (z + 1) * ny), (nz - 1 - z) * ny);
  }
  const j = S.j, i = S.i;
  paint(off.cor, corFlip, nz, nx, (p) => { const z = nz - 1 - Math.floor(p / nx), x = p % nx; return S.label[(z * ny + j) * nx + x]; });
  paint(off.sag, sagFlip, nz, ny, (p) => { const z = nz - 1 - Math.floor(p / ny), y = p % ny; return S.label[(z * ny + y) * nx + i]; });
  // framed on the orbits: coronal shows columns i0..i1, sagittal rows j0..j1, both slices k0..k1 (flipped rows)
  const o = S.sideCrop && S.orbits, fz = o ? [nz - o.hi[0], nz - o.lo[0]] : [0, nz];
  drawSide($("coronal"), off.cor, S.sp[2], S.sp[0], S.i, o ? [o.lo[2], o.hi[2]] : [0, nx], fz);
  drawSide($("sagittal"), off.sag, S.sp[1], S.sp[0], S.j, o ? [o.lo[1], o.hi[1]] : [0, ny], fz);
}

// draws columns cols[0]..cols[1] and rows rows[0]..rows[1] (end exclusive) of `src`, aspect-true, centred
function drawSide(cv, src, aw, ah, at, cols, rows) {
  const ctx = cv.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, cv.width, cv.height);
  const w = cols[1] - cols[0], h = rows[1] - rows[0];
  const s = Math.min(cv.width / (w * aw), cv.height / (h * ah));
  const dw = w * aw * s, dh = h * ah * s, ox = (cv.width - dw) / 2, oy = (cv.height - dh) / 2;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(src, cols[0], rows[0], w, h, ox, oy, dw, dh);
  const yk = oy + (S.nz - 1 - S.k - rows[0] + 0.5) * (dh / h);
  ctx.strokeStyle = "rgba(255,255,0,0.5)"; ctx.beginPath(); ctx.moveTo(ox, yk); ctx.lineTo(ox + dw, yk); ctx.stroke();
  cv._map = { ox, oy, dw, dh, w, h, x0: cols[0], y0: rows[0] };
}

function sideClick(cv, ev, isCor) {
  const m = cv._map; if (!m) return;
  const r = cv.getBoundingClientRect();
  const x = Math.floor((ev.clientX - r.left - m.ox) / (m.dw / m.w)), y = Math.floor((ev.clientY - r.top - m.oy) / (m.dh / m.h));
  if (x < 0 || y < 0 || x >= m.w || y >= m.h) return;
  S.k = S.nz - 1 - (y + m.y0);
  if (isCor) S.i = x + m.x0; else S.j = x + m.x0;
  showSlice();
}

// ---------------------------------------------------------------- view
function setWindow(level, width) {
  S.level = +level; S.width = Math.max(1, +width);
  $("level").value = Math.round(S.level); $("width").value = Math.round(S.width);
  render().catch(() => {});
}
// the whole slice in every view
function wholeView() { S.zoom = 1; S.panX = 0; S.panY = 0; S.sideCrop = false; }
// zoom and pan so the orbits' region (rows j0..j1, columns i0..i1) fills the axial view; side views crop to it
function frameOrbits() {
  if (!S.orbits) { wholeView(); return; }
  const cv = $("axial"), ax = S.sp[2], ay = S.sp[1], [, j0, i0] = S.orbits.lo, [, j1, i1] = S.orbits.hi;
  const base = Math.min(cv.width / (S.nx * ax), cv.height / (S.ny * ay));
  S.zoom = Math.max(1, Math.min(16, Math.min(cv.width / ((i1 - i0) * ax * base), cv.height / ((j1 - j0) * ay * base))));
  const sx = base * ax * S.zoom, sy = base * ay * S.zoom;
  S.panX = (S.nx / 2 - (i0 + i1) / 2) * sx; S.panY = (S.ny / 2 - (j0 + j1) / 2) * sy;
  S.sideCrop = true;
}
function resetView() { if (S.orbits) frameOrbits(); else wholeView(); }
// the part of the axial slice the view shows: rows / columns (pixel indices, clipped to the slice)
function viewRegion() {
  const cv = $("axial"), t = axialTransform();
  const c0 = -t.ox / t.sx, c1 = (cv.width - t.ox) / t.sx, r0 = -t.oy / t.sy, r1 = (cv.height - t.oy) / t.sy;
  return { row0: Math.max(0, r0), row1: Math.min(S.ny, r1), col0: Math.max(0, c0), col1: Math.min(S.nx, c1) };
}
function setActive(l) {
  S.active = l;
  document.querySelectorAll(".swatch").forEach((d) => d.classList.toggle("active", +d.dataset.label === l));
}
function setTool(t) {
  S.tool = t;
  document.querySelectorAll("#tools button").forEach((b) => b.classList.toggle("active", b.dataset.tool === t));
  render().catch(() => {});
}

function toPixel(ev) {
  const cv = $("axial"), r = cv.getBoundingClientRect(), t = axialTransform();
  const x = (ev.clientX - r.left) * (cv.width / r.width), y = (ev.clientY - r.top) * (cv.height / r.height);
  return { row: Math.floor((y - t.oy) / t.sy), col: Math.floor((x - t.ox) / t.sx), x, y };
}
// page coordinates of the centre of pixel (row, col) of the axial view (used by tests and tools)
function toScreen(row, col) {
  const cv = $("axial"), r = cv.getBoundingClientRect(), t = axialTransform();
  return { x: r.left + (t.ox + (col + 0.5) * t.sx) * (r.width / cv.width), y: r.top + (t.oy + (row + 0.5) * t.sy) * (r.height / cv.height) };
}

// ---------------------------------------------------------------- editing + undo
function slab(z0, z1) { return S.label.slice(z0 * S.ny * S.nx, z1 * S.ny * S.nx); }
function pushUndo(z0, before) {
  S.undo.push({ z0, before, after: slab(z0, z0 + before.length / (S.ny * S.nx)) });
  if (S.undo.length > MAX_UNDO) S.undo.shift();
  S.redo = [];
  markDirty();
}
function applyResult(z0, data) {
  const before = slab(z0, z0 + data.length / (S.ny * S.nx));
  let changed = false;
  for (let p = 0; p < data.length; p++) if (before[p] !== data[p]) { changed = true; break; }
  if (!changed) return false;
  S.label.set(data, z0 * S.ny * S.nx);
  pushUndo(z0, before);
  return true;
}
function undo() {
  const e = S.undo.pop(); if (!e) return;
  S.label.set(e.before, e.z0 * S.ny * S.nx); S.redo.push(e); markDirty(); render();
}
function redo() {
  const e = S.redo.pop(); if (!e) return;
  S.label.set(e.after, e.z0 * S.ny * S.nx); S.undo.push(e); markDirty(); render();
}
function markDirty() { S.dirty = true; S.editSeq++; updateSaveState(); scheduleAutosave(); }

let drawing = null;
function paintDisc(row, col, value, target, onlyLabel) {
  const r = S.brush / 2, r2 = r * r, base = S.k * S.ny * S.nx;
  for (let y = Math.floor(row - r); y <= Math.ceil(row + r); y++) {
    if (y < 0 || y >= S.ny) continue;
    for (let x = Math.floor(col - r); x <= Math.ceil(col + r); x++) {
      if (x < 0 || x >= S.nx) continue;
      if ((y - row) ** 2 + (x - col) ** 2 > r2 && S.brush > 1) continue;
      const q = base + y * S.nx + x;
      if (onlyLabel !== undefined && target[q] !== onlyLabel) continue;
      target[q] = value;
    }
  }
}
function paintLine(a, b, value, target) {
  const n = Math.max(1, Math.ceil(Math.hypot(b.row - a.row, b.col - a.col)));
  for (let s = 0; s <= n; s++) paintDisc(a.row + (b.row - a.row) * s / n, a.col + (b.col - a.col) * s / n, value, target);
}

async function pencilClick(row, col) {
  const k = S.k, n = $("pencil-n").value, erase = $("pencil-erase").checked;
  const body = slab(k, k + 1);
  try {
    const out = await apiBytes(`/api/cases/${encodeURIComponent(S.caseId)}/pencil?z0=${k}&n=${n}&row=${row}&col=${col}&label=${S.active}&eraser=${erase ? 1 : 0}`,
      { method: "POST", body, headers: { "Content-Type": "application/octet-stream" } });
    if (applyResult(k, out)) render();
  } catch (e) { reportError(e, "SmartPencil"); }
}

function slabRange() {
  if (!$("use-3d").checked) return [S.k, S.k + 1];
  const mm = Math.max(0, +$("slab-mm").value || 0), d = Math.min(Math.floor((S.info.max_slab - 1) / 2), Math.ceil(mm / S.sp[0]));
  return [Math.max(0, S.k - d), Math.min(S.nz, S.k + d + 1)];
}

async function smartFill() {
  if (!S.caseId) return;
  const [z0, z1] = slabRange(), n = (z1 - z0) * S.ny * S.nx;
  const body = new Uint8Array(2 * n);
  body.set(slab(z0, z1), 0); body.set(S.strokes.subarray(z0 * S.ny * S.nx, z1 * S.ny * S.nx), n);
  // fill the structures that have strokes on these slices; with no strokes, the active one from its labelled pixels
  const present = new Set(); for (let p = n; p < 2 * n; p++) if (body[p] >= 1 && body[p] <= 3) present.add(body[p]);
  const labels = present.size ? [...present].sort().join(",") : String(S.active);
  try {
    const out = await apiBytes(`/api/cases/${encodeURIComponent(S.caseId)}/smartfill?z0=${z0}&z1=${z1}&labels=${labels}`,
      { method: "POST", body, headers: { "Content-Type": "application/octet-stream" } }, "SmartFill…");
    if (applyResult(z0, out)) render();
  } catch (e) { reportError(e, "SmartFill"); }
}

async function autoCorrect() {
  if (!S.caseId) return;
  const [z0, z1] = slabRange();
  try {
    const out = await apiBytes(`/api/cases/${encodeURIComponent(S.caseId)}/autocorrect?z0=${z0}&z1=${z1}`,
      { method: "POST", body: slab(z0, z1), headers: { "Content-Type": "application/octet-stream" } }, "AutoCorrection…");
    if (applyResult(z0, out)) render();
  } catch (e) { reportError(e, "AutoCorrection"); }
}

async function predict() {
  if (!S.caseId) return;
  try {
    const out = await apiBytes(`/api/cases/${encodeURIComponent(S.caseId)}/predict`, { method: "POST" }, "Predicting (may take a while)…");
    if (applyResult(0, out)) render();
    loadCases().catch(() => {});  // the draft's quality flags
    loadMeasurements();  // the draft's measurements when no label is saved yet
    showMessage("Draft from the model loaded: correct it, then save. Undo brings back your labels. On this case SmartFill and AutoCorrection now also use the model's probabilities.");
  } catch (e) { reportError(e, "Predict"); }
}

// ---------------------------------------------------------------- saving
function updateSaveState() {
  const el = $("save-state");
  if (!S.caseId) { el.textContent = "no case open"; return; }
  el.textContent = S.saving ? "saving…" : S.dirty ? "unsaved changes" : (S.version === "none" ? "not saved yet" : "saved");
  el.dataset.version = S.version;
}
async function gzip(bytes) {
  if (typeof CompressionStream === "undefined") return { body: bytes, enc: null };
  const cs = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return { body: new Uint8Array(await new Response(cs).arrayBuffer()), enc: "gzip" };
}
async function save({ force = false, auto = false } = {}) {
  if (!S.caseId || S.saving) return;
  S.saving = true; updateSaveState();
  const seq = S.editSeq, id = S.caseId;
  try {
    const { body, enc } = await gzip(S.label);
    const headers = { "Content-Type": "application/octet-stream" };
    if (enc) headers["Content-Encoding"] = "gzip";
    const r = await apiJSON(`/api/cases/${encodeURIComponent(id)}/label?base=${S.version}${force ? "&force=1" : ""}`,
      { method: "PUT", body, headers }, auto ? "autosaving…" : "saving…");
    if (id === S.caseId) {
      S.version = r.version;
      if (S.editSeq === seq) S.dirty = false;
    }
    loadCases().catch(() => {});
    if (id === S.caseId) loadMeasurements();
    apiJSON(`/api/cases/${encodeURIComponent(id)}/history`).then((h) => fillHistory(h.versions)).catch(() => {});
  } catch (e) {
    if (e.status === 409) {
      $("autosave").checked = false;
      showMessage(e.message + "\nAutosave is paused.", "error", [
        ["Reload their version", () => openCase(id, { keepView: true })],
        ["Save mine anyway", () => save({ force: true })],
      ]);
    } else reportError(e, "Save failed (your edits are still here; try again)");
    throw e;
  } finally { S.saving = false; updateSaveState(); }
}
let autosaveTimer = null;
function scheduleAutosave() {
  clearTimeout(autosaveTimer);
  autosaveTimer = setTimeout(() => { if ($("autosave").checked && S.dirty) save({ auto: true }).catch(() => {}); }, S.autosaveMs);
}

// ---------------------------------------------------------------- events
function bind() {
  const cv = $("axial");
  cv.addEventListener("contextmenu", (e) => e.preventDefault());
  cv.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (!S.caseId) return;
    if (e.ctrlKey) { S.zoom = Math.max(0.5, Math.min(16, S.zoom * (e.deltaY < 0 ? 1.15 : 1 / 1.15))); render(); }
    else { S.k += e.deltaY > 0 ? -1 : 1; showSlice(); }
  }, { passive: false });
  cv.addEventListener("mousedown", (e) => {
    if (!S.caseId) return;
    const p = toPixel(e);
    if (e.button === 1 || (e.button === 0 && S.tool === "pan")) { drawing = { mode: "pan", x: e.clientX, y: e.clientY }; return; }
    if (e.button === 2) { drawing = { mode: "wl", x: e.clientX, y: e.clientY, l: S.level, w: S.width }; return; }
    if (p.row < 0 || p.col < 0 || p.row >= S.ny || p.col >= S.nx) return;
    S.j = p.row; S.i = p.col;
    if (S.tool === "pencil") { pencilClick(p.row, p.col); return; }
    if (S.tool === "brush" || S.tool === "eraser") {
      drawing = { mode: "paint", last: p, before: slab(S.k, S.k + 1), value: S.tool === "brush" ? S.active : 0, target: S.label };
      paintDisc(p.row, p.col, drawing.value, S.label);
    } else if (S.tool === "stroke") {
      drawing = { mode: "stroke", last: p, value: e.shiftKey ? 255 : S.active, target: S.strokes };
      paintDisc(p.row, p.col, drawing.value, S.strokes);
    }
    render();
  });
  window.addEventListener("mousemove", (e) => {
    if (!drawing) return;
    if (drawing.mode === "pan") { S.panX += e.clientX - drawing.x; S.panY += e.clientY - drawing.y; drawing.x = e.clientX; drawing.y = e.clientY; render(); return; }
    if (drawing.mode === "wl") { setWindow(drawing.l - (e.clientY - drawing.y) * 2, drawing.w + (e.clientX - drawing.x) * 2); return; }
    const p = toPixel(e);
    paintLine(drawing.last, p, drawing.value, drawing.target); drawing.last = p; render();
  });
  window.addEventListener("mouseup", () => {
    if (drawing && drawing.mode === "paint") {
      const before = drawing.before, after = slab(S.k, S.k + 1);
      if (before.some((v, q) => v !== after[q])) pushUndo(S.k, before);
    }
    drawing = null;
  });
  $("coronal").addEventListener("click", (e) => sideClick($("coronal"), e, true));
  $("sagittal").addEventListener("click", (e) => sideClick($("sagittal"), e, false));
  document.querySelectorAll("#tools button").forEach((b) => (b.onclick = () => setTool(b.dataset.tool)));
  $("brush-size").oninput = (e) => { S.brush = +e.target.value; $("brush-size-v").textContent = S.brush; };
  $("opacity").oninput = (e) => { S.opacity = +e.target.value; render(); };
  $("pencil-n").onchange = () => render();
  $("show-borders").onchange = () => render();
  $("level").onchange = () => setWindow($("level").value, S.width);
  $("width").onchange = () => setWindow(S.level, $("width").value);
  $("smartfill").onclick = smartFill;
  $("autocorrect").onclick = autoCorrect;
  $("predict").onclick = predict;
  $("undo").onclick = undo; $("redo").onclick = redo;
  $("save").onclick = () => save().catch(() => {});
  $("clear-strokes").onclick = () => { if (S.strokes) { S.strokes.fill(0); render(); } };
  $("refresh-cases").onclick = () => loadCases().catch((e) => reportError(e, "Case list"));
  $("help-btn").onclick = () => ($("help").hidden = !$("help").hidden);
  $("help-close").onclick = () => ($("help").hidden = true);
  $("mark-done").onclick = async () => {
    if (!S.caseId) return;
    try {
      if (S.dirty) await save();
      await apiJSON(`/api/cases/${encodeURIComponent(S.caseId)}/status`, { method: "POST", body: JSON.stringify({ status: "done" }), headers: { "Content-Type": "application/json" } });
      loadCases();
    } catch (e) { if (e.status !== 409) reportError(e, "Mark done"); }
  };
  $("history").onchange = async (e) => {
    const name = e.target.value; if (!name || !S.caseId) return;
    try {
      const out = await apiBytes(`/api/cases/${encodeURIComponent(S.caseId)}/history/${encodeURIComponent(name)}`, {}, "loading version…");
      if (applyResult(0, out)) render();
      showMessage(`Version ${name} loaded as your working label; save to keep it (undo goes back).`);
    } catch (err) { reportError(err, "History"); }
    e.target.value = "";
  };
  window.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" && e.target.type !== "checkbox" && e.target.type !== "range") return;
    const k = e.key, ctrl = e.ctrlKey || e.metaKey;
    if (ctrl && (k === "z" || k === "Z")) { e.preventDefault(); e.shiftKey ? redo() : undo(); return; }
    if (ctrl && (k === "y" || k === "Y")) { e.preventDefault(); redo(); return; }
    if (ctrl && (k === "s" || k === "S")) { e.preventDefault(); save().catch(() => {}); return; }
    if (ctrl) return;
    const act = {
      ArrowUp: () => { S.k++; showSlice(); }, PageUp: () => { S.k++; showSlice(); },
      ArrowDown: () => { S.k--; showSlice(); }, PageDown: () => { S.k--; showSlice(); },
      "1": () => setActive(1), "2": () => setActive(2), "3": () => setActive(3),
      b: () => setTool("brush"), e: () => setTool("eraser"), p: () => setTool("pencil"), s: () => setTool("stroke"),
      f: smartFill, a: autoCorrect,
      o: () => { S.overlay = !S.overlay; render(); },
      "+": () => { S.zoom = Math.min(16, S.zoom * 1.25); render(); }, "=": () => { S.zoom = Math.min(16, S.zoom * 1.25); render(); },
      "-": () => { S.zoom = Math.max(0.5, S.zoom / 1.25); render(); }, "0": () => { resetView(); render(); },
      "9": () => { wholeView(); render(); },
      "[": () => { S.brush = Math.max(1, S.brush - 1); $("brush-size").value = S.brush; $("brush-size-v").textContent = S.brush; },
      "]": () => { S.brush = Math.min(40, S.brush + 1); $("brush-size").value = S.brush; $("brush-size-v").textContent = S.brush; },
      "?": () => ($("help").hidden = !$("help").hidden), h: () => ($("help").hidden = !$("help").hidden),
      Escape: () => ($("help").hidden = true),
    }[k];
    if (act) { e.preventDefault(); act(); }
  });
  window.addEventListener("beforeunload", (e) => { if (S.dirty) { e.preventDefault(); e.returnValue = ""; } });
}

function fitCanvas() {
  const cv = $("axial"), viewer = $("viewer");
  const side = $("side-views").getBoundingClientRect().width || 300;
  const size = Math.max(300, Math.min(900, Math.floor(Math.min(viewer.clientWidth - side - 12, window.innerHeight - 80))));
  if (cv.width !== size) {
    const f = size / cv.width;  // the pan is in canvas pixels: keep the same part of the slice in view
    S.panX *= f; S.panY *= f; cv.width = size; cv.height = size; render().catch(() => {});
  }
}
window.addEventListener("resize", fitCanvas);

// test / scripting hooks
window.orbitseg = { state: S, toScreen, viewRegion, openCase, save, loadMeasurements, undo, redo, smartFill, autoCorrect, setTool, setActive, render,
  labelCount: (l) => { let n = 0; for (const v of S.label) if (v === l) n++; return n; },
  idle: () => S.busy === 0 && !S.saving };

bind();
fitCanvas();
loadInfo().then(loadCases).catch((e) => reportError(e, "Cannot reach the server"));
