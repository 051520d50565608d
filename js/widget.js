// HeadWidget front end: one ES module (anywidget ships one file), made of small parts:
//   decoding      toFloat32, unpack: arrays from the kernel's binary buffers
//   createClient  requests {id, op, args} as custom messages; replies {id, ok, result | error}
//                 go to the request that sent them, replies to anything else are dropped
//   createPatternCache  the patterns of one text at one training step, from replies and pushes
//   draw*         pure drawing: data in, canvas pixels and DOM text out
//   HeadView      one view: what the user asked for (local state), what it requests, what it draws
// The messages are described in mlx_headwidget/wire.py. Token text is always set as text, never
// parsed as HTML. Every part but tokens carries the training step whose weights computed it (null
// for a model without checkpoints): a view draws only data of the step it shows.
//
// Test and benchmark hooks: each view's root element (.hw-root) carries `hooks`, the one object
// tests and benchmarks read (no other part of the page is an interface for them):
//   hooks.state       "computing" | "done" | "error" | "stalled" | "disconnected"
//   hooks.geometry    {cell, left, top}: the grid's cell size and origin, in CSS px
//   hooks.drawn       {grid, pattern}: the data the canvases show ({kind, text, step, attend_to,
//                     into, contrast, shape, values},
//                     {text, step, layer, head, shape, values}), or null
//   hooks.counts      {grid, pattern}: canvas draws; {requests}: sent; {dropped}: replies dropped
//   hooks.gridDrawMs  how long the last grid draw took
//   hooks.prefetched  patterns of the current text (and step) held in the browser
//   hooks.on(event, fn)  fn() after each "grid" or "pattern" draw and each "state" change;
//                     returns a function that removes it

const KIND_LABELS = {
  induction: "induction (repeated random tokens)",
  induction_text: "induction (this text)",
  previous_token: "previous token",
  first_token: "first token",
  current_token: "current token",
  duplicate_token: "duplicate token",
  attention_to_token: "attention to the alt-clicked token",
  k_composition: "K-composition into the head in view",
  q_composition: "Q-composition into the head in view",
  v_composition: "V-composition into the head in view",
  patching: "patching: share of logit(answer) - logit(distractor) restored",
  logit_attribution: "direct logit attribution (logits)",
};
const ATTENTION_TO = "attention_to_token"; // every head's attention from attend_to[0] to attend_to[1]
const COMPOSITION = ["k_composition", "q_composition", "v_composition"]; // of every head into `focus`
const CONTRAST_KINDS = ["patching", "logit_attribution"]; // of the text and `contrast`
const CONTRAST = ["corrupted", "answer", "distractor"];
const sameEntries = (a, b) => JSON.stringify(Object.entries(a || {}).sort()) === JSON.stringify(Object.entries(b || {}).sort());
// The colours' range of a grid: [0, 1], or [-m, m] for logits (m the largest |value|).
function gridRange(g) {
  if (!g || g.kind !== "logit_attribution") return [0, 1];
  const m = g.values.reduce((a, v) => (Number.isFinite(v) ? Math.max(a, Math.abs(v)) : a), 0);
  return [-(m || 1), m || 1];
}
const QUIET_MS = 100; // a click's answer quicker than this is drawn without an interim "computing" state
const CACHE_VALUES = 16e6; // float32 values of patterns kept in the browser (64 MB)
// viridis at 9 evenly spaced points; colours in between are interpolated.
const VIRIDIS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];

function colour(v) {
  if (!Number.isFinite(v)) return [200, 200, 200];
  const x = Math.min(1, Math.max(0, v)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}
const css = (rgb) => `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;

// ---- decoding ---------------------------------------------------------------------------------
function bytesOf(buf) {
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

function halfToFloat(h) {
  const e = (h >> 10) & 31;
  const m = h & 1023;
  const s = h & 32768 ? -1 : 1;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

// Little-endian float16 or float32 bytes -> Float32Array of n values.
function toFloat32(buf, dtype, n) {
  const raw = bytesOf(buf).slice(); // copy: aligned, and independent of the message
  if (dtype === "float32") return new Float32Array(raw.buffer, 0, n);
  if (dtype !== "float16") throw new Error(`unsupported dtype ${dtype}`);
  if (typeof Float16Array !== "undefined") return Float32Array.from(new Float16Array(raw.buffer, 0, n));
  const dv = new DataView(raw.buffer);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true));
  return out;
}

// A reply's JSON with each {shape, dtype, buffer} replaced by {shape, values: Float32Array}.
function unpack(value, buffers) {
  if (Array.isArray(value)) return value.map((v) => unpack(v, buffers));
  if (!value || typeof value !== "object") return value;
  if ("buffer" in value && "dtype" in value && Array.isArray(value.shape)) {
    const n = value.shape.reduce((a, b) => a * b, 1);
    return { shape: value.shape, values: toFloat32(buffers[value.buffer], value.dtype, n) };
  }
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, unpack(v, buffers)]));
}

// ---- request client ---------------------------------------------------------------------------
// request(op, args, {onPart, onProgress, onDone, onError}) sends one request and returns its id;
// the kernel's messages about it go to those callbacks until the answer (onDone or onError).
// drop(id) forgets a request: what the kernel still says about it is dropped, like replies to
// other views' requests. Pushes (messages with no id) go to onPush.
function createClient(model, onPush) {
  const tag = Math.random().toString(36).slice(2, 10); // ids unique among this widget's views
  const pending = new Map();
  let next = 0;
  const client = { heardAt: 0, dropped: 0, sent: 0 };
  function handle(msg, buffers) {
    if (!msg || typeof msg !== "object") return;
    if (msg.push) { onPush(unpack(msg, buffers || [])); return; }
    const entry = pending.get(msg.id);
    if (!entry) { client.dropped += 1; return; }
    client.heardAt = performance.now();
    if (msg.progress) entry.onProgress(msg.progress);
    else if (msg.ok && msg.part) entry.onPart(unpack(msg.result, buffers || []));
    else {
      pending.delete(msg.id);
      if (msg.ok) entry.onDone(unpack(msg.result, buffers || []), msg.seconds);
      else entry.onError(String(msg.error));
    }
  }
  model.on("msg:custom", handle);
  client.request = (op, args, callbacks) => {
    const id = `${tag}-${++next}`;
    pending.set(id, callbacks);
    client.sent += 1;
    client.heardAt = performance.now();
    try {
      model.send({ id, op, args });
    } catch (err) { // a kernel shut down: no answer will come, and the view says so in time
      console.warn("HeadWidget: request not sent", err);
    }
    return id;
  };
  client.drop = (id) => pending.delete(id);
  client.dropAll = () => pending.clear();
  client.close = () => { model.off("msg:custom", handle); pending.clear(); };
  return client;
}

// ---- pattern cache ----------------------------------------------------------------------------
// A step absent from a message (a page saved without steps) is the same as null.
const sameStep = (a, b) => (a ?? null) === (b ?? null);

// The patterns {text, step, layer, head, shape, values} of one text at one training step, oldest
// dropped past `limit` values.
function createPatternCache(limit) {
  let text = null;
  let step = null;
  let total = 0;
  const heads = new Map();
  const key = (layer, head) => `${layer},${head}`;
  return {
    get size() { return heads.size; },
    holds(t, s) { return t === text && sameStep(s, step); },
    reset(newText, newStep) {
      if (this.holds(newText, newStep)) return;
      text = newText;
      step = newStep ?? null;
      heads.clear();
      total = 0;
    },
    get(layer, head) { return heads.get(key(layer, head)) || null; },
    put(p) {
      if (!this.holds(p.text, p.step)) return;
      const k = key(p.layer, p.head);
      if (heads.has(k)) total -= heads.get(k).values.length;
      heads.delete(k);
      heads.set(k, p);
      total += p.values.length;
      for (const [old, q] of heads) {
        if (total <= limit || old === k) break;
        heads.delete(old);
        total -= q.values.length;
      }
    },
  };
}

// ---- drawing ----------------------------------------------------------------------------------
// Whitespace made visible on token chips.
const visible = (tok) => tok.replace(/ /g, "\u00b7").replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192") || "\u2205";
const headName = (l, h) => `L${l}H${h}`;
const sameHead = (a, b) => a && b && a.length === 2 && b.length === 2 && a[0] === b[0] && a[1] === b[1];
const headsKey = (heads) => heads.map((h) => headName(h[0], h[1])).sort().join(",");

function make(tag, cls, parent, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function drawLegend(canvas) {
  canvas.width = 120;
  canvas.height = 10;
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < 120; x++) {
    ctx.fillStyle = css(colour(x / 119));
    ctx.fillRect(x, 0, 1, 10);
  }
}

// The grid (n_layers x n_heads cells coloured by score, NaN grey), white rings around the selected
// heads and an orange one around the head in view. Returns the geometry {cell, left, top}.
function drawGrid(canvas, { grid, shape, selection, focus, width, textColour, range }) {
  const [L, H] = shape;
  const left = 34;
  const top = 16;
  const c = Math.max(5, Math.min(26, Math.floor(Math.max(240, width - left - 8) / H)));
  const w = left + H * c + 2;
  const h = top + L * c + 2;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); // resizing reallocates the canvas: only when it changes
    canvas.height = Math.round(h * dpr);
    canvas.style.width = `${w}px`;
    canvas.style.height = `${h}px`;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "10px sans-serif"; // every setting used below is set: the context keeps the last draw's
  ctx.fillStyle = textColour;
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  const step = Math.max(1, Math.ceil(22 / c));
  for (let l = 0; l < L; l += step) ctx.fillText(`L${l}`, 2, top + (l + 0.5) * c);
  ctx.textAlign = "center";
  for (let k = 0; k < H; k += step) ctx.fillText(`${k}`, left + (k + 0.5) * c, 7);
  const gap = c > 7 ? 1 : 0;
  for (let l = 0; l < L; l++) {
    for (let k = 0; k < H; k++) {
      ctx.fillStyle = css(colour(grid ? (grid.values[l * H + k] - range[0]) / (range[1] - range[0]) : NaN));
      ctx.fillRect(left + k * c, top + l * c, c - gap, c - gap);
    }
  }
  ctx.lineWidth = 2;
  const inView = focus && focus.length === 2 && !selection.some((s) => sameHead(s, focus)) ? [focus] : [];
  for (const [l, k] of [...selection, ...inView]) {
    ctx.strokeStyle = sameHead([l, k], focus) ? "#ff3d00" : "#ffffff";
    ctx.strokeRect(left + k * c + 1, top + l * c + 1, c - 3, c - 3);
  }
  return { cell: c, left, top };
}

// One pixel per (query, key) of a pattern {shape [T, T], values}: sqrt(attention) on the scale.
function drawHeatmap(canvas, p, nTokens) {
  const [T] = p.shape;
  canvas.width = T;
  canvas.height = T;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(T, T);
  for (let i = 0; i < T * T; i++) {
    const rgb = colour(Math.sqrt(Math.max(0, p.values[i])));
    img.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  const size = Math.min(360, Math.max(120, T * 6));
  canvas.style.width = canvas.style.height = `${size}px`;
  canvas.title = `rows: query tokens, columns: key tokens (${nTokens || T} tokens; colour = sqrt of attention)`;
}

function buildChips(container, tokens) {
  container.replaceChildren();
  return (tokens || []).map((tok, j) => {
    const chip = make("span", "hw-chip", container, visible(tok));
    chip.dataset.index = String(j);
    return chip;
  });
}

// Tint each chip by the attention of token `i` to it (reverse: of it to token i), alpha = weight.
function tintChips(chips, tokens, p, i, reverse) {
  const T = tokens ? tokens.length : 0;
  chips.forEach((chip, j) => {
    let w = NaN;
    if (p && i !== null && i < T && p.shape[0] === T) {
      w = reverse ? (j >= i ? p.values[j * T + i] : NaN) : (j <= i ? p.values[i * T + j] : NaN);
    }
    chip.classList.toggle("hw-hovered", j === i);
    if (!Number.isFinite(w)) {
      chip.style.background = "";
      chip.title = "";
      return;
    }
    chip.style.background = `rgba(255, 87, 34, ${Math.min(1, w).toFixed(3)})`;
    const [q, k] = reverse ? [j, i] : [i, j];
    chip.title = `${visible(tokens[q])} attends to ${visible(tokens[k])}: ${w.toFixed(3)}`;
  });
}

function drawTabs(container, selection, focus, onPick) {
  container.replaceChildren();
  for (const [l, h] of selection.length > 1 ? selection : []) {
    const b = make("button", "hw-tab", container, headName(l, h));
    if (sameHead([l, h], focus)) b.classList.add("hw-active");
    b.addEventListener("click", () => onPick([l, h]));
  }
}

// The predictions table and the loss line of an ablation part.
function drawPredictions(table, lossLine, a) {
  const none = a.heads.length === 0;
  const d = a.loss_after - a.loss_before;
  lossLine.textContent = none
    ? `mean next-token loss ${a.loss_before.toFixed(3)}`
    : `mean next-token loss ${a.loss_before.toFixed(3)} \u2192 ${a.loss_after.toFixed(3)} (${d >= 0 ? "+" : ""}${d.toFixed(3)})`;
  table.replaceChildren();
  const head = make("tr", null, table);
  make("th", null, head, "#");
  make("th", null, head, none ? "next token" : "before");
  if (!none) make("th", null, head, "after");
  a.top_before.forEach(([tok, prob], r) => {
    const row = make("tr", null, table);
    make("td", null, row, String(r + 1));
    const cells = none ? [["before", tok, prob]] : [["before", tok, prob], ["after", ...a.top_after[r]]];
    for (const [side, t, pr] of cells) make("td", `hw-pred hw-pred-${side}`, row, `${visible(t)}  ${(100 * pr).toFixed(1)}%`);
  });
}

// One chip per token tinted by how the ablation changed its loss (red: up, blue: down).
function drawLossChips(container, tokens, a) {
  container.replaceChildren();
  if (!tokens || a.heads.length === 0) return;
  const before = a.token_loss_before.values;
  const after = a.token_loss_after.values;
  tokens.forEach((tok, j) => {
    const chip = make("span", "hw-chip", container, visible(tok));
    if (j === 0) return; // the first token is never predicted
    const change = after[j - 1] - before[j - 1];
    const alpha = Math.min(1, Math.abs(change) / 2).toFixed(3);
    chip.style.background = change >= 0 ? `rgba(229, 57, 53, ${alpha})` : `rgba(30, 136, 229, ${alpha})`;
    chip.title = `loss ${before[j - 1].toFixed(3)} \u2192 ${after[j - 1].toFixed(3)}`;
  });
}

// What the status line says, from the view's request state: {state, text}.
function statusLine(s) {
  if (s.disconnected) return { state: "disconnected", text: "disconnected: the kernel was restarted or shut down; re-run the cell" };
  if (s.inflight) {
    const silent = (performance.now() - s.heardAt) / 1000;
    if (silent > s.replyTimeout) {
      return { state: "stalled", text: `no answer from the kernel for ${silent.toFixed(0)} s: it may still be computing, or it was restarted or shut down (then re-run the cell)` };
    }
    const secs = ((performance.now() - s.sentAt) / 1000).toFixed(1);
    const p = s.progress;
    const what = p && p.message ? `: ${p.message}` : "";
    const pct = p && Number.isFinite(p.done) ? ` ${Math.round(100 * p.done)}%` : "";
    return { state: "computing", text: `computing${what}${pct} (${secs} s)` };
  }
  const a = s.answer || {};
  return { state: a.state || "done", text: a.state === "error" ? `error: ${a.message}` : a.message || "" };
}

// ---- layout -----------------------------------------------------------------------------------
function layout(el) {
  const ui = {};
  ui.root = make("div", "hw-root", el);
  const bar = make("div", "hw-bar", ui.root);
  make("label", "hw-label", bar, "score");
  ui.kind = make("select", "hw-kind", bar);
  ui.status = make("span", "hw-status", bar);
  ui.text = make("textarea", "hw-text", ui.root);
  ui.text.rows = 2;
  ui.text.spellcheck = false;
  const textRow = make("div", "hw-textrow", ui.root);
  ui.apply = make("button", "hw-apply", textRow, "Run on this text");
  make("span", "hw-hint", textRow, "Ctrl+Enter also runs. Click a head; shift/ctrl-click adds or removes. Alt-click a token: which heads look there.");
  const contrast = make("div", "hw-contrast", ui.root);
  make("label", "hw-label", contrast, "corrupted");
  ui.corrupted = make("input", "hw-corrupted", contrast);
  ui.answer = make("input", "hw-answer", contrast);
  ui.distractor = make("input", "hw-distractor", contrast);
  ui.corrupted.placeholder = "corrupted text, as many tokens";
  ui.answer.placeholder = "answer token";
  ui.distractor.placeholder = "distractor token";
  ui.patch = make("button", "hw-patch", contrast, "Patch heads");
  const main = make("div", "hw-main", ui.root);
  ui.gridPanel = make("div", "hw-panel hw-grid-panel", main);
  ui.gridTitle = make("div", "hw-title", ui.gridPanel, "heads");
  ui.steps = make("label", "hw-steps", ui.gridPanel);
  ui.stepLabel = make("span", "hw-step-label", ui.steps);
  ui.step = make("input", "hw-step", ui.steps);
  ui.step.type = "range";
  ui.step.min = "0";
  ui.steps.hidden = true;
  const gridWrap = make("div", "hw-grid-wrap", ui.gridPanel);
  ui.grid = make("canvas", "hw-grid", gridWrap);
  ui.gridTip = make("div", "hw-tip", gridWrap);
  const legend = make("div", "hw-legend", ui.gridPanel);
  ui.legendLo = make("span", "hw-legend-lo", legend, "0");
  ui.legend = make("canvas", "hw-legend-bar", legend);
  ui.legendHi = make("span", "hw-legend-hi", legend, "1");
  ui.legendName = make("span", "hw-legend-name", legend);
  const view = make("div", "hw-panel hw-view", main);
  ui.viewTitle = make("div", "hw-title hw-view-title", view, "no head selected");
  ui.tabs = make("div", "hw-tabs", view);
  const controls = make("div", "hw-controls", view);
  const reverseLabel = make("label", "hw-reverse", controls);
  ui.reverse = make("input", null, reverseLabel);
  ui.reverse.type = "checkbox";
  reverseLabel.appendChild(document.createTextNode(" reverse: who attends to the hovered token"));
  ui.chips = make("div", "hw-chips", view);
  ui.heatWrap = make("div", "hw-heat-wrap", view);
  ui.heat = make("canvas", "hw-heatmap", ui.heatWrap);
  ui.heatTip = make("div", "hw-tip", ui.heatWrap);
  const abl = make("div", "hw-panel hw-ablation", ui.root);
  ui.abl = abl;
  ui.ablTitle = make("div", "hw-title hw-ablation-title", abl);
  ui.ablLoss = make("div", "hw-loss", abl);
  ui.ablTable = make("table", "hw-preds", abl);
  ui.ablChips = make("div", "hw-chips hw-loss-chips", abl);
  ui.gridTip.hidden = ui.heatTip.hidden = true;
  return ui;
}

function createHooks() {
  const listeners = { grid: new Set(), pattern: new Set(), state: new Set() };
  return {
    state: "",
    geometry: { cell: 12, left: 34, top: 16 },
    drawn: { grid: null, pattern: null },
    counts: { grid: 0, pattern: 0, requests: 0, dropped: 0 },
    gridDrawMs: 0,
    prefetched: 0,
    on(event, fn) { listeners[event].add(fn); return () => listeners[event].delete(fn); },
    emit(event) { for (const fn of [...listeners[event]]) fn(); },
  };
}

// ---- one view ---------------------------------------------------------------------------------
const STATE_KEYS = ["text", "kind", "selection", "focus", "step", "attend_to", "contrast"];
const LATER_KEYS = { attend_to: [], contrast: {} }; // what a saved page without them means
const kernelValue = (model, k) => model.get(k) ?? (k in LATER_KEYS ? LATER_KEYS[k] : null);

class HeadView {
  constructor(model, el) {
    this.model = model;
    this.el = el;
    this.ui = layout(el);
    this.hooks = createHooks();
    this.ui.root.hooks = this.hooks;
    this.local = Object.fromEntries(STATE_KEYS.map((k) => [k, kernelValue(model, k)])); // what the user sees
    this.pending = {}; // changes not sent yet
    this.inflight = null; // {id, changes, sentAt}: the one request on its way
    this.failed = null; // the state whose data the kernel could not give: not asked again
    this.answer = model.get("status"); // {state, message} shown while no request is on its way
    this.progress = null;
    this.disconnected = false;
    this.data = { tokens: null, grid: null, ablation: null };
    this.cache = createPatternCache(CACHE_VALUES);
    this.client = createClient(model, (push) => this.onPush(push));
    Object.defineProperties(this.hooks.counts, {
      requests: { get: () => this.client.sent, enumerable: true },
      dropped: { get: () => this.client.dropped, enumerable: true },
    });
    this.hover = null;
    this.pinned = null;
    this.frame = null;
    this.newView = true;
    this.listen();
    this.bindInputs();
    this.fillContrast();
    drawLegend(this.ui.legend);
    this.clock = setInterval(() => { if (this.inflight) this.showStatus(); }, 200);
    // the grid panel's width, read when the browser has laid it out: a draw reading clientWidth
    // would force a layout of the whole notebook after any change to the page
    this.panelWidth = 0;
    this.resize = new ResizeObserver(() => {
      const width = this.ui.gridPanel.clientWidth;
      if (width === this.panelWidth) return;
      this.panelWidth = width;
      this.redraw();
    });
    this.resize.observe(this.ui.gridPanel);
    this.drawNow();
    this.flush();
  }

  // ---- what the view shows, when the kernel has sent it --------------------------------------
  currentTokens() {
    const t = this.data.tokens;
    return t && t.text === this.local.text ? t.tokens : null;
  }
  currentGrid() {
    const g = this.data.grid;
    if (!g || g.kind !== this.local.kind || !sameStep(g.step, this.local.step)) return null;
    if (g.kind === ATTENTION_TO && JSON.stringify(g.attend_to) !== JSON.stringify(this.local.attend_to)) return null;
    if (COMPOSITION.includes(g.kind) && JSON.stringify(g.into) !== JSON.stringify(this.local.focus)) return null;
    if (CONTRAST_KINDS.includes(g.kind) && !sameEntries(g.contrast, this.local.contrast)) return null;
    return g.text === null || g.text === this.local.text ? g : null;
  }
  currentPattern() {
    const f = this.local.focus;
    if (!f || f.length !== 2 || !this.cache.holds(this.local.text, this.local.step)) return null;
    return this.cache.get(f[0], f[1]);
  }
  currentAblation() {
    const a = this.data.ablation;
    const fresh = a && a.text === this.local.text && sameStep(a.step, this.local.step)
      && headsKey(a.heads) === headsKey(this.local.selection);
    return fresh ? a : null;
  }
  missing() {
    const want = [];
    if (!this.currentTokens()) want.push("tokens");
    if (!this.currentGrid()) want.push("grid");
    if (this.local.focus.length === 2 && !this.currentPattern()) want.push("pattern");
    if (!this.currentAblation()) want.push("ablation");
    return want;
  }

  // ---- requests -----------------------------------------------------------------------------
  // `quiet`: leave the page as it is (but the grid) until the answer or QUIET_MS: a relayout of
  // the notebook while the answer is on its way would delay drawing it.
  propose(changes, quiet = false) {
    if (this.disconnected) return;
    Object.assign(this.local, changes);
    Object.assign(this.pending, changes);
    this.failed = null;
    this.flush(quiet);
    if (!quiet || !this.inflight) { this.redraw(); return; }
    this.drawGridPanel();
    clearTimeout(this.quiet);
    this.quiet = setTimeout(() => { this.quiet = null; this.drawNow(); }, QUIET_MS);
  }

  // Send the pending changes and ask for what the view lacks, unless a request is on its way:
  // changes made meanwhile are merged and leave together when it is answered.
  flush(quiet = false) {
    if (this.inflight || this.disconnected) return;
    const changes = this.pending;
    const want = this.missing();
    const key = JSON.stringify(this.local);
    if (Object.keys(changes).length === 0 && (want.length === 0 || this.failed === key)) return;
    this.pending = {};
    this.progress = null;
    const args = { changes, want, new_view: this.newView };
    this.newView = false;
    const id = this.client.request("set", args, {
      onPart: (result) => this.store(result),
      onProgress: (progress) => { this.progress = progress; this.showStatus(); },
      onDone: (result, seconds) => this.answered(result, seconds),
      onError: (message) => this.refused(message, key),
    });
    this.inflight = { id, changes, sentAt: performance.now() };
    if (quiet) this.setHookState("computing"); // the status line follows within QUIET_MS
    else this.showStatus();
  }

  // `seconds`: the kernel's time for the request (absent: as the view timed it); null from a
  // saved page's stand-in (static.js), which no kernel timed
  answered(result, seconds) {
    const { changes, sentAt } = this.inflight;
    this.inflight = null;
    clearTimeout(this.quiet);
    this.store(result);
    const secs = Number.isFinite(seconds) ? seconds : (performance.now() - sentAt) / 1000;
    const refresh = Object.keys(changes).length === 0;
    if (!(refresh && this.answer && this.answer.state === "error")) { // an error stays until the user acts
      const message = seconds === null ? "done (saved page: no kernel)" : `done in ${secs.toFixed(2)} s`;
      this.answer = { state: "done", message };
    }
    this.adoptKernel(changes); // what others changed meanwhile; ours arrive with their echo
    this.flush();
    this.redraw();
  }

  refused(message, key) {
    const { changes } = this.inflight;
    this.inflight = null;
    clearTimeout(this.quiet);
    this.answer = { state: "error", message };
    this.failed = key;
    // nothing was applied: back to the kernel's values, except what the user changed since
    for (const k of Object.keys(changes)) if (!(k in this.pending)) this.local[k] = kernelValue(this.model, k);
    this.adoptKernel({});
    this.flush();
    this.drawNow();
  }

  // The kernel's value of each state key neither sent in `skip` nor waiting to be sent; whether
  // any differed from what the view showed.
  adoptKernel(skip) {
    let changed = false;
    for (const k of STATE_KEYS) {
      if (k in skip || k in this.pending) continue;
      const value = kernelValue(this.model, k);
      if (JSON.stringify(value) === JSON.stringify(this.local[k])) continue;
      this.local[k] = value;
      changed = true;
      if (k === "contrast") this.fillContrast();
    }
    return changed;
  }

  // Keep a reply's parts; the pattern cache follows the text and step the view shows.
  store(result) {
    const { text, step } = this.local;
    if (Object.values(result).some((p) => p && p.text === text && sameStep(p.step, step))) this.cache.reset(text, step);
    const tokens = result.tokens;
    if (tokens && (!this.data.tokens || this.data.tokens.text !== tokens.text)) {
      this.hover = this.pinned = null;
    }
    if (tokens) this.data.tokens = tokens;
    if (result.grid) {
      const g = result.grid;
      const attendTo = g.attend_to || [];
      this.data.grid = { kind: g.kind, text: g.text, step: g.step ?? null, attend_to: attendTo, into: g.into || [], contrast: g.contrast || {}, shape: g.values.shape, values: g.values.values };
    }
    if (result.ablation) this.data.ablation = result.ablation;
    const p = result.pattern;
    if (p && p.values) {
      this.cache.put({ text: p.text, step: p.step ?? null, layer: p.layer, head: p.head, shape: p.values.shape, values: p.values.values });
      this.hooks.prefetched = this.cache.holds(this.local.text, this.local.step) ? this.cache.size : 0;
      this.drawView(); // at once: a click waits on this
    }
    this.redraw();
  }

  onPush(push) {
    if (push.push !== "patterns" || push.text !== this.local.text || !sameStep(push.step, this.local.step)) return;
    this.cache.reset(push.text, push.step);
    push.heads.forEach(([layer, head], i) => {
      const v = push.patterns[i];
      this.cache.put({ text: push.text, step: push.step ?? null, layer, head, shape: v.shape, values: v.values });
    });
    this.hooks.prefetched = this.cache.size;
    this.redraw();
  }

  // A state trait changed in the kernel (another view, Python): shown unless a request of ours
  // is on its way (its answer decides) or the user changed it meanwhile.
  onKernelChange() {
    if (this.inflight || !this.adoptKernel({})) return; // (the echo of our own request: as shown)
    this.flush();
    this.redraw();
  }

  // ---- drawing ------------------------------------------------------------------------------
  redraw() {
    if (this.frame !== null) return;
    this.frame = requestAnimationFrame(() => { this.frame = null; this.drawNow(); });
  }

  drawNow() {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
    const ui = this.ui;
    if (document.activeElement !== ui.text && ui.text.value !== this.local.text) ui.text.value = this.local.text;
    ui.kind.value = this.local.kind;
    this.drawGridPanel();
    this.drawView();
    this.drawAblation();
    this.showStatus();
  }

  // The training-step slider: shown when the model has two or more steps.
  drawSteps() {
    const steps = this.model.get("steps") || [];
    const { steps: row, step, stepLabel } = this.ui;
    row.hidden = steps.length < 2;
    if (row.hidden) return;
    step.max = String(steps.length - 1);
    step.value = String(Math.max(0, steps.indexOf(this.local.step)));
    stepLabel.textContent = `training step ${this.local.step}`;
  }

  drawGridPanel() {
    const t0 = performance.now();
    this.drawSteps();
    const g = this.currentGrid();
    const shape = this.model.get("shape");
    const { root, grid, gridPanel } = this.ui;
    const range = gridRange(g);
    this.hooks.geometry = drawGrid(grid, {
      grid: g, shape, selection: this.local.selection, focus: this.local.focus, range,
      width: this.panelWidth || gridPanel.clientWidth || 420, textColour: getComputedStyle(root).color || "#222",
    });
    [this.ui.legendLo.textContent, this.ui.legendHi.textContent] = range.map((v) => String(+v.toPrecision(3)));
    this.hooks.drawn.grid = g ? { kind: g.kind, text: g.text, step: g.step, attend_to: g.attend_to, into: g.into, contrast: g.contrast, shape: g.shape, values: g.values } : null;
    this.hooks.gridDrawMs = performance.now() - t0;
    this.hooks.counts.grid += 1;
    const [L, H] = shape;
    this.ui.gridTitle.textContent = `${L} layers \u00d7 ${H} heads${g ? "" : " (computing)"}`;
    this.ui.legendName.textContent = this.kindLabel();
    this.hooks.emit("grid");
  }

  // The grid's name; for attention_to_token the two tokens, as text; for a composition the head.
  kindLabel() {
    const { kind, attend_to: at, focus } = this.local;
    if (COMPOSITION.includes(kind)) {
      const into = focus.length === 2 ? headName(focus[0], focus[1]) : "the head in view (click a head)";
      return `${kind[0].toUpperCase()}-composition into ${into}`;
    }
    const tokens = this.currentTokens();
    if (kind !== ATTENTION_TO || at.length !== 2 || !tokens) return KIND_LABELS[kind] || kind;
    const [q, k] = at;
    return `attention from ${visible(tokens[q] ?? "?")} (#${q}) to ${visible(tokens[k] ?? "?")} (#${k})`;
  }

  drawView() {
    const { ui, local } = this;
    const tokens = this.currentTokens();
    const p = this.currentPattern();
    const tabsKey = `${local.selection.map((h) => headName(h[0], h[1])).join(",")}|${local.focus}`;
    if (ui.tabs.dataset.key !== tabsKey) {
      ui.tabs.dataset.key = tabsKey;
      drawTabs(ui.tabs, local.selection, local.focus, (head) => this.propose({ focus: head }));
    }
    const f = local.focus;
    if (!f || f.length !== 2) {
      ui.viewTitle.textContent = "no head selected: click a cell of the grid";
    } else {
      const g = this.currentGrid();
      const score = g ? g.values[f[0] * g.shape[1] + f[1]] : NaN;
      const scoreText = Number.isFinite(score) ? ` ${score.toFixed(3)}` : "";
      ui.viewTitle.textContent = `${headName(f[0], f[1])} ${local.kind}${scoreText}${p ? "" : " (loading pattern)"}`;
    }
    if (tokens !== this.chipTokens) {
      this.chipTokens = tokens;
      this.chipEls = buildChips(ui.chips, tokens);
    }
    this.tint(p, tokens);
    const key = local.kind === ATTENTION_TO && local.attend_to.length === 2 ? local.attend_to[1] : -1;
    (this.chipEls || []).forEach((chip, j) => chip.classList.toggle("hw-key", j === key));
    this.drawPattern(p, tokens);
  }

  tint(p, tokens) {
    const i = this.pinned !== null ? this.pinned : this.hover;
    tintChips(this.chipEls || [], tokens, p, i, this.ui.reverse.checked);
  }

  // While a pattern is on its way the previous drawing stays, dimmed: changing the layout on a
  // click would delay the reply's processing by a relayout of the whole notebook.
  drawPattern(p, tokens) {
    const { heat, heatWrap } = this.ui;
    heatWrap.classList.toggle("hw-stale", !p);
    if (!p) {
      this.hooks.drawn.pattern = null;
      heatWrap.hidden = !this.heatValues || this.local.focus.length !== 2;
      return;
    }
    heatWrap.hidden = false;
    this.hooks.drawn.pattern = p;
    if (this.heatValues === p.values) return;
    this.heatValues = p.values;
    drawHeatmap(heat, p, tokens ? tokens.length : 0);
    this.hooks.counts.pattern += 1;
    this.hooks.emit("pattern");
  }

  drawAblation() {
    const { ui, local } = this;
    const a = this.currentAblation();
    const tokens = this.currentTokens();
    const names = local.selection.map((h) => headName(h[0], h[1])).join(", ");
    ui.abl.classList.toggle("hw-stale", !a);
    ui.ablTitle.textContent = local.selection.length
      ? `zero-ablating ${names}${a ? "" : ": computing"}`
      : "no heads ablated: select heads to zero them; predictions of the intact model";
    if (!a || (this.ablDrawn && this.ablDrawn.a === a && this.ablDrawn.tokens === tokens)) return;
    this.ablDrawn = { a, tokens };
    drawPredictions(ui.ablTable, ui.ablLoss, a);
    drawLossChips(ui.ablChips, tokens, a);
  }

  showStatus() {
    const line = statusLine({
      disconnected: this.disconnected, inflight: this.inflight !== null, heardAt: this.client.heardAt,
      sentAt: this.inflight ? this.inflight.sentAt : 0, progress: this.progress,
      replyTimeout: this.model.get("reply_timeout"), answer: this.answer,
    });
    this.ui.status.textContent = line.text;
    this.ui.status.classList.toggle("hw-error", line.state === "error" || line.state === "disconnected");
    this.setHookState(line.state);
  }

  setHookState(state) {
    if (this.hooks.state === state) return;
    this.hooks.state = state;
    this.hooks.emit("state");
  }

  // ---- events -------------------------------------------------------------------------------
  listen() {
    const on = (event, cb) => { this.model.on(event, cb); this.listeners.push([event, cb]); };
    this.listeners = [];
    for (const key of STATE_KEYS) on(`change:${key}`, () => this.onKernelChange());
    on("change:status", () => {
      if (this.inflight) return;
      this.answer = this.model.get("status");
      this.showStatus();
    });
    // Jupyter's widget manager marks the view when the kernel restarts or dies; no answer will come.
    on("comm_live_update", () => setTimeout(() => this.checkConnection(), 0));
  }

  checkConnection() {
    if (!this.el.closest(".jupyter-widgets-disconnected")) return;
    this.disconnected = true;
    this.inflight = null;
    this.pending = {};
    this.client.dropAll();
    const { text, kind, apply, reverse, step, corrupted, answer, distractor, patch } = this.ui;
    for (const input of [text, kind, apply, reverse, step, corrupted, answer, distractor, patch]) input.disabled = true;
    this.showStatus();
  }

  bindInputs() {
    const { ui } = this;
    for (const k of this.model.get("kinds")) make("option", null, ui.kind, KIND_LABELS[k] || k).value = k;
    ui.kind.addEventListener("change", () => this.propose({ kind: ui.kind.value }));
    ui.step.addEventListener("input", () => {
      const step = (this.model.get("steps") || [])[Number(ui.step.value)];
      if (step !== undefined && step !== this.local.step) this.propose({ step });
    });
    const runText = () => {
      if (ui.text.value === this.local.text) return;
      // token positions of the old text mean nothing in the new one: back to the score shown before
      const away = this.local.kind === ATTENTION_TO ? { kind: this.kindBefore || "induction", attend_to: [] } : {};
      // patching: a new text and its corrupted text go together (they must have as many tokens)
      const contrast = CONTRAST_KINDS.includes(this.local.kind) ? { contrast: this.typedContrast() } : {};
      this.propose({ text: ui.text.value, ...away, ...contrast });
    };
    ui.apply.addEventListener("click", runText);
    ui.text.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runText(); }
    });
    ui.reverse.addEventListener("change", () => this.drawView());
    ui.patch.addEventListener("click", () => this.runContrast());
    ui.grid.addEventListener("click", (e) => this.clickGrid(e));
    ui.grid.addEventListener("mousemove", (e) => this.hoverGrid(e));
    ui.grid.addEventListener("mouseleave", () => { ui.gridTip.hidden = true; });
    ui.chips.addEventListener("mouseover", (e) => this.hoverChip(e, false));
    ui.chips.addEventListener("click", (e) => this.hoverChip(e, true));
    ui.heat.addEventListener("mousemove", (e) => this.hoverHeatmap(e));
    ui.heat.addEventListener("mouseleave", () => { ui.heatTip.hidden = true; });
  }

  // The contrast inputs show the kernel's contrast when it changes there (not when a request is
  // refused: what the user typed stays, to be corrected).
  fillContrast() {
    for (const k of CONTRAST) this.ui[k].value = this.local.contrast[k] || "";
  }

  // The corrupted text and the two tokens (empty ones left out), on the patching grid unless the
  // grid already is one of them; a text typed but not run yet goes with them.
  runContrast() {
    const kind = CONTRAST_KINDS.includes(this.local.kind) ? this.local.kind : "patching";
    const text = this.ui.text.value !== this.local.text ? { text: this.ui.text.value } : {};
    this.propose({ ...text, contrast: this.typedContrast(), kind });
  }

  typedContrast() {
    const contrast = {};
    for (const k of CONTRAST) if (this.ui[k].value) contrast[k] = this.ui[k].value;
    return contrast;
  }

  cellAt(event) {
    const r = this.ui.grid.getBoundingClientRect();
    const [L, H] = this.model.get("shape");
    const { cell, left, top } = this.hooks.geometry;
    const k = Math.floor((event.clientX - r.left - left) / cell);
    const l = Math.floor((event.clientY - r.top - top) / cell);
    return l >= 0 && l < L && k >= 0 && k < H ? [l, k] : null;
  }

  // A click is one request: the selection and the head in view change together.
  clickGrid(e) {
    const cell = this.cellAt(e);
    if (!cell) return;
    const { selection, focus } = this.local;
    const has = selection.some((s) => sameHead(s, cell));
    let next = [cell];
    let view = cell;
    if (e.shiftKey || e.ctrlKey || e.metaKey) {
      next = has ? selection.filter((s) => !sameHead(s, cell)) : [...selection, cell];
      view = has ? (sameHead(focus, cell) ? next[next.length - 1] || [] : focus) : cell;
    }
    // a prefetched pattern: everything drawn at once, in this frame; else the grid at once and
    // the rest with the answer
    const prefetched = this.cache.holds(this.local.text, this.local.step) && view.length === 2 && this.cache.get(view[0], view[1]);
    this.propose({ selection: next, focus: view }, !prefetched);
    if (prefetched) this.drawNow();
  }

  showTip(tip, e, text) {
    tip.textContent = text;
    tip.hidden = false;
    tip.style.left = `${e.offsetX + 12}px`;
    tip.style.top = `${e.offsetY + 12}px`;
  }

  hoverGrid(e) {
    const cell = this.cellAt(e);
    if (!cell) { this.ui.gridTip.hidden = true; return; }
    const g = this.currentGrid();
    const v = g ? g.values[cell[0] * g.shape[1] + cell[1]] : NaN;
    this.showTip(this.ui.gridTip, e, `${headName(cell[0], cell[1])} ${this.local.kind} ${Number.isFinite(v) ? v.toFixed(3) : "n/a"}`);
  }

  hoverChip(e, pin) {
    const chip = e.target.closest(".hw-chip");
    if (!chip) return;
    const i = Number(chip.dataset.index);
    if (pin && e.altKey) { this.lookHere(i); return; }
    if (pin) {
      this.pinned = this.pinned === i ? null : i;
    } else if (this.pinned !== null || i === this.hover) {
      return;
    }
    this.hover = i;
    this.tint(this.currentPattern(), this.currentTokens());
  }

  // Alt-click on token `key`: the grid shows every head's attention to it from the pinned query
  // token (if at or after it), else from the last token.
  lookHere(key) {
    const tokens = this.currentTokens();
    if (!tokens) return;
    const query = this.pinned !== null && this.pinned >= key ? this.pinned : tokens.length - 1;
    if (this.local.kind !== ATTENTION_TO) this.kindBefore = this.local.kind;
    this.propose({ kind: ATTENTION_TO, attend_to: [query, key] });
  }

  hoverHeatmap(e) {
    const p = this.currentPattern();
    const tokens = this.currentTokens();
    if (!p || !tokens) return;
    const T = p.shape[0];
    const r = this.ui.heat.getBoundingClientRect();
    const j = Math.floor(((e.clientX - r.left) / r.width) * T);
    const i = Math.floor(((e.clientY - r.top) / r.height) * T);
    if (i < 0 || j < 0 || i >= T || j >= T) return;
    this.showTip(this.ui.heatTip, e, `${visible(tokens[i])} \u2192 ${visible(tokens[j])}: ${p.values[i * T + j].toFixed(3)}`);
  }

  destroy() {
    for (const [event, cb] of this.listeners) this.model.off(event, cb);
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    clearInterval(this.clock);
    clearTimeout(this.quiet);
    this.resize.disconnect();
    this.client.close();
    this.el.replaceChildren();
  }
}

function render({ model, el }) {
  const view = new HeadView(model, el);
  return () => view.destroy();
}

export default { render };
