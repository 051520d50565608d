// HeadWidget front end: draws the synced state and reports user actions. No computing here.
//
// State arriving from the kernel: grid {kind, text, shape, dtype, data}, text_tokens {text,
// tokens}, pattern {text, layer, head, shape, dtype, data}, ablation {...}, status {...}.
// State the front end sends: text, kind, selection (heads ablated), focus (head in view) and a
// request id. One request is in flight at a time; changes made meanwhile are merged into the
// next one (coalescing), and data is drawn only when its key (text, kind, head) matches what
// the user currently asked for.

const KIND_LABELS = {
  induction: "induction (repeated random tokens)",
  induction_text: "induction (this text)",
  previous_token: "previous token",
  first_token: "first token",
  current_token: "current token",
  duplicate_token: "duplicate token",
};
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

function bytesOf(buf) {
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

// A {dtype, shape, data} array from the kernel -> Float32Array (little-endian float16/32).
function toFloat32(arr) {
  const n = arr.shape.reduce((a, b) => a * b, 1);
  const raw = bytesOf(arr.data).slice(); // copy: aligned, and independent of the message
  if (arr.dtype === "float32") return new Float32Array(raw.buffer, 0, n);
  if (arr.dtype !== "float16") throw new Error(`unsupported dtype ${arr.dtype}`);
  if (typeof Float16Array !== "undefined") return Float32Array.from(new Float16Array(raw.buffer, 0, n));
  const dv = new DataView(raw.buffer);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const h = dv.getUint16(2 * i, true);
    const e = (h >> 10) & 31;
    const m = h & 1023;
    const s = h & 32768 ? -1 : 1;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

// Whitespace made visible on token chips.
const visible = (tok) => tok.replace(/ /g, "\u00b7").replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192") || "\u2205";
const headName = (l, h) => `L${l}H${h}`;
const sameHead = (a, b) => a && b && a[0] === b[0] && a[1] === b[1];
const headsKey = (heads) => heads.map((h) => headName(h[0], h[1])).sort().join(",");

function make(tag, cls, parent, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function render({ model, el }) {
  const listeners = [];
  const on = (event, cb) => { model.on(event, cb); listeners.push([event, cb]); };
  let frame = null;
  let clock = null;

  // What the user sees and asked for; sent to the kernel as requests.
  const local = {
    text: model.get("text"), kind: model.get("kind"),
    selection: model.get("selection"), focus: model.get("focus"),
  };
  let pending = {};
  let inflight = null;
  let disconnected = false; // the kernel under this view was restarted or shut down
  let heardAt = 0; // when the kernel last said anything about our request
  let sentAt = 0;
  const cache = { text: null, heads: new Map(), asked: new Set() }; // prefetched patterns
  let grid = null; // {key, shape, values}
  let pattern = null; // {text, layer, head, shape, values}
  let hover = null; // token index whose attention is shown
  let pinned = null;

  // ---- layout ---------------------------------------------------------------------------------
  const root = make("div", "hw-root", el);
  const bar = make("div", "hw-bar", root);
  make("label", "hw-label", bar, "score");
  const kindSelect = make("select", "hw-kind", bar);
  const status = make("span", "hw-status", bar);
  const textBox = make("textarea", "hw-text", root);
  textBox.rows = 2;
  textBox.spellcheck = false;
  const textRow = make("div", "hw-textrow", root);
  const apply = make("button", "hw-apply", textRow, "Run on this text");
  make("span", "hw-hint", textRow, "Ctrl+Enter also runs. Click a head; shift/ctrl-click adds or removes.");

  const main = make("div", "hw-main", root);
  const gridPanel = make("div", "hw-panel hw-grid-panel", main);
  const gridTitle = make("div", "hw-title", gridPanel, "heads");
  const gridWrap = make("div", "hw-grid-wrap", gridPanel);
  const gridCanvas = make("canvas", "hw-grid", gridWrap);
  const tip = make("div", "hw-tip", gridWrap);
  const legend = make("div", "hw-legend", gridPanel);
  make("span", "hw-legend-lo", legend, "0");
  const legendBar = make("canvas", "hw-legend-bar", legend);
  make("span", "hw-legend-hi", legend, "1");
  const legendName = make("span", "hw-legend-name", legend);

  const view = make("div", "hw-panel hw-view", main);
  const viewTitle = make("div", "hw-title hw-view-title", view, "no head selected");
  const tabs = make("div", "hw-tabs", view);
  const controls = make("div", "hw-controls", view);
  const reverseLabel = make("label", "hw-reverse", controls);
  const reverse = make("input", null, reverseLabel);
  reverse.type = "checkbox";
  reverseLabel.appendChild(document.createTextNode(" reverse: who attends to the hovered token"));
  const chips = make("div", "hw-chips", view);
  const heatWrap = make("div", "hw-heat-wrap", view);
  const heat = make("canvas", "hw-heatmap", heatWrap);
  const heatTip = make("div", "hw-tip", heatWrap);

  const abl = make("div", "hw-panel hw-ablation", root);
  const ablTitle = make("div", "hw-title hw-ablation-title", abl);
  const ablLoss = make("div", "hw-loss", abl);
  const ablTable = make("table", "hw-preds", abl);
  const ablChips = make("div", "hw-chips hw-loss-chips", abl);

  legendBar.width = 120;
  legendBar.height = 10;
  const lctx = legendBar.getContext("2d");
  for (let x = 0; x < 120; x++) {
    lctx.fillStyle = css(colour(x / 119));
    lctx.fillRect(x, 0, 1, 10);
  }

  // ---- requests -------------------------------------------------------------------------------
  function propose(changes) {
    if (disconnected) return;
    Object.assign(local, changes);
    Object.assign(pending, changes);
    flush();
    redraw();
  }

  function flush() {
    if (inflight !== null || Object.keys(pending).length === 0) return;
    const id = model.get("request") + 1;
    for (const [key, value] of Object.entries(pending)) model.set(key, value);
    model.set("request", id);
    pending = {};
    inflight = id;
    root.dataset.request = String(id);
    sentAt = heardAt = performance.now();
    model.save_changes();
    showStatus();
  }

  function answered() {
    // Our request answered, or (idle) another view of this widget was: show the kernel's state.
    const s = model.get("status") || {};
    if (s.state === "computing" || (inflight !== null && !(s.request >= inflight))) return;
    inflight = null;
    for (const key of ["text", "kind", "selection", "focus"]) {
      if (!(key in pending)) local[key] = model.get(key);
    }
    flush();
  }

  function prefetch() {
    // Ask once per (text, kind) for the patterns of the best heads; all of them if they fit.
    const tokens = model.get("text_tokens");
    if (!grid || !tokens || tokens.text !== local.text || inflight !== null) return;
    const budget = model.get("prefetch_bytes");
    const T = tokens.tokens.length;
    const n = Math.floor(budget / (2 * T * T));
    const tag = `${local.text}\u0000${grid.key}`;
    if (n < 1 || cache.asked.has(tag)) return;
    cache.asked.add(tag);
    const [L, H] = grid.shape;
    const order = [];
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) order.push([l, h, grid.values[l * H + h]]);
    order.sort((a, b) => (Number.isFinite(b[2]) ? b[2] : -1) - (Number.isFinite(a[2]) ? a[2] : -1));
    const heads = order.slice(0, n).map((x) => [x[0], x[1]]).filter((h) => !cache.heads.has(headName(...h)));
    if (heads.length) model.send({ type: "prefetch", text: local.text, heads });
  }

  on("msg:custom", (msg, buffers) => {
    if (!msg || msg.type !== "patterns" || msg.text !== cache.text) return;
    msg.heads.forEach(([l, h], i) => {
      const values = toFloat32({ dtype: msg.dtype, shape: msg.shape, data: buffers[i] });
      remember({ text: msg.text, layer: l, head: h, shape: msg.shape, values });
    });
  });

  function remember(p) {
    cache.heads.delete(headName(p.layer, p.head));
    cache.heads.set(headName(p.layer, p.head), p);
    let total = 0;
    for (const q of cache.heads.values()) total += q.values.length;
    for (const [key, q] of cache.heads) {
      if (total <= CACHE_VALUES || key === headName(p.layer, p.head)) break;
      cache.heads.delete(key); // the oldest first
      total -= q.values.length;
    }
    root.dataset.prefetched = String(cache.heads.size);
  }

  // ---- kernel state -> local drawing data -----------------------------------------------------
  function readGrid() {
    const g = model.get("grid");
    if (!g || !g.data) { grid = null; return; }
    grid = { kind: g.kind, text: g.text, key: g.kind, shape: g.shape, values: toFloat32(g) };
  }
  function readPattern() {
    const p = model.get("pattern");
    if (!p || !p.data) { pattern = null; return; }
    pattern = { text: p.text, layer: p.layer, head: p.head, shape: p.shape, values: toFloat32(p) };
    if (p.text === cache.text) remember(pattern);
  }
  function currentTokens() {
    const t = model.get("text_tokens");
    return t && t.text === local.text ? t.tokens : null;
  }
  function currentGrid() {
    if (!grid || grid.kind !== local.kind) return null;
    return grid.text === null || grid.text === local.text ? grid : null;
  }
  function currentPattern() {
    const f = local.focus;
    if (!f || f.length !== 2) return null;
    if (pattern && pattern.text === local.text && sameHead([pattern.layer, pattern.head], f)) return pattern;
    const hit = cache.text === local.text ? cache.heads.get(headName(f[0], f[1])) : null;
    return hit || null;
  }

  // ---- drawing --------------------------------------------------------------------------------
  const geom = { cell: 12, left: 34, top: 16 };
  function drawGrid() {
    const t0 = performance.now();
    const g = currentGrid();
    const [L, H] = model.get("shape");
    const avail = Math.max(240, (gridPanel.clientWidth || 420) - geom.left - 8);
    geom.cell = Math.max(5, Math.min(26, Math.floor(avail / H)));
    const c = geom.cell;
    const w = geom.left + H * c + 2;
    const h = geom.top + L * c + 2;
    const dpr = window.devicePixelRatio || 1;
    gridCanvas.width = Math.round(w * dpr);
    gridCanvas.height = Math.round(h * dpr);
    gridCanvas.style.width = `${w}px`;
    gridCanvas.style.height = `${h}px`;
    const ctx = gridCanvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "10px sans-serif";
    ctx.fillStyle = getComputedStyle(root).color || "#222";
    ctx.textBaseline = "middle";
    const step = Math.max(1, Math.ceil(22 / c));
    for (let l = 0; l < L; l += step) ctx.fillText(`L${l}`, 2, geom.top + (l + 0.5) * c);
    ctx.textAlign = "center";
    for (let k = 0; k < H; k += step) ctx.fillText(`${k}`, geom.left + (k + 0.5) * c, 7);
    for (let l = 0; l < L; l++) {
      for (let k = 0; k < H; k++) {
        ctx.fillStyle = css(colour(g ? g.values[l * H + k] : NaN));
        ctx.fillRect(geom.left + k * c, geom.top + l * c, c - (c > 7 ? 1 : 0), c - (c > 7 ? 1 : 0));
      }
    }
    ctx.lineWidth = 2;
    for (const [l, k] of local.selection) {
      ctx.strokeStyle = sameHead([l, k], local.focus) ? "#ff3d00" : "#ffffff";
      ctx.strokeRect(geom.left + k * c + 1, geom.top + l * c + 1, c - 3, c - 3);
    }
    gridCanvas.drawnGrid = g ? { kind: g.kind, text: g.text, shape: g.shape, values: g.values } : null;
    gridCanvas.dataset.kind = g ? g.kind : "";
    Object.assign(gridCanvas.dataset, { cell: c, left: geom.left, top: geom.top });
    gridCanvas.lastDrawMs = performance.now() - t0;
    gridCanvas.dataset.draws = String(Number(gridCanvas.dataset.draws || 0) + 1);
    gridTitle.textContent = g ? `${L} layers \u00d7 ${H} heads` : `${L} layers \u00d7 ${H} heads (computing)`;
    legendName.textContent = KIND_LABELS[local.kind] || local.kind;
  }

  function cellAt(event) {
    const r = gridCanvas.getBoundingClientRect();
    const [L, H] = model.get("shape");
    const k = Math.floor((event.clientX - r.left - geom.left) / geom.cell);
    const l = Math.floor((event.clientY - r.top - geom.top) / geom.cell);
    return l >= 0 && l < L && k >= 0 && k < H ? [l, k] : null;
  }

  // While a pattern is on its way the previous drawing stays, dimmed: changing the layout on a
  // click would delay the reply's processing by a relayout of the whole notebook.
  let heatValues = null;
  function drawHeatmap(p, tokens) {
    heatWrap.classList.toggle("hw-stale", !p);
    if (!p) {
      heat.drawnPattern = null;
      heatWrap.hidden = heatValues === null || !(local.focus && local.focus.length === 2);
      return;
    }
    heatWrap.hidden = false;
    if (heatValues === p.values) {
      heat.drawnPattern = { text: p.text, layer: p.layer, head: p.head, shape: p.shape, values: p.values };
      return;
    }
    heatValues = p.values;
    const [T] = p.shape;
    heat.width = T;
    heat.height = T;
    const ctx = heat.getContext("2d");
    const img = ctx.createImageData(T, T);
    for (let i = 0; i < T * T; i++) {
      const rgb = colour(Math.sqrt(Math.max(0, p.values[i])));
      img.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * i);
    }
    ctx.putImageData(img, 0, 0);
    const size = Math.min(360, Math.max(120, T * 6));
    heat.style.width = heat.style.height = `${size}px`;
    heat.drawnPattern = { text: p.text, layer: p.layer, head: p.head, shape: p.shape, values: p.values };
    heat.dataset.layer = String(p.layer);
    heat.dataset.head = String(p.head);
    heat.dataset.draws = String(Number(heat.dataset.draws || 0) + 1);
    heat.title = `rows: query tokens, columns: key tokens (${tokens ? tokens.length : T} tokens; colour = sqrt of attention)`;
  }

  let chipEls = [];
  let chipTokens = null;
  function drawChips(p, tokens) {
    if (tokens !== chipTokens) { // build the chips once per text; hovering only restyles them
      chipTokens = tokens;
      chips.replaceChildren();
      chipEls = (tokens || []).map((tok, j) => {
        const chip = make("span", "hw-chip", chips, visible(tok));
        chip.dataset.index = String(j);
        return chip;
      });
    }
    if (!tokens) return;
    const T = tokens.length;
    const i = pinned !== null ? pinned : hover;
    chipEls.forEach((chip, j) => {
      let w = NaN;
      if (p && i !== null && i < T && p.shape[0] === T) {
        w = reverse.checked ? (j >= i ? p.values[j * T + i] : NaN) : (j <= i ? p.values[i * T + j] : NaN);
      }
      chip.classList.toggle("hw-hovered", j === i);
      if (!Number.isFinite(w)) {
        delete chip.dataset.weight;
        chip.style.background = "";
        chip.title = "";
        return;
      }
      chip.dataset.weight = w.toFixed(4);
      chip.style.background = `rgba(255, 87, 34, ${Math.min(1, w).toFixed(3)})`;
      const [q, k] = reverse.checked ? [j, i] : [i, j];
      chip.title = `${visible(tokens[q])} attends to ${visible(tokens[k])}: ${w.toFixed(3)}`;
    });
  }

  function drawView() {
    const tokens = currentTokens();
    const p = currentPattern();
    const tabsKey = `${local.selection.map((x) => headName(...x)).join(",")}|${local.focus}`;
    if (tabs.dataset.key !== tabsKey) {
      tabs.dataset.key = tabsKey;
      tabs.replaceChildren();
      for (const [l, h] of local.selection.length > 1 ? local.selection : []) {
        const b = make("button", "hw-tab", tabs, headName(l, h));
        if (sameHead([l, h], local.focus)) b.classList.add("hw-active");
        b.addEventListener("click", () => propose({ focus: [l, h] }));
      }
    }
    const f = local.focus;
    if (!f || f.length !== 2) {
      viewTitle.textContent = "no head selected: click a cell of the grid";
    } else {
      const g = currentGrid();
      const H = model.get("shape")[1];
      const score = g ? g.values[f[0] * H + f[1]] : NaN;
      const scoreText = Number.isFinite(score) ? ` ${score.toFixed(3)}` : "";
      viewTitle.textContent = `${headName(f[0], f[1])} ${local.kind}${scoreText}${p ? "" : " (loading pattern)"}`;
    }
    viewTitle.dataset.head = f && f.length === 2 ? headName(f[0], f[1]) : "";
    drawChips(p, tokens);
    drawHeatmap(p, tokens);
  }

  let ablDrawn = null;
  function drawAblation() {
    const a = model.get("ablation");
    const tokens = currentTokens();
    const fresh = a && a.text === local.text && headsKey(a.heads) === headsKey(local.selection);
    const names = local.selection.map((h) => headName(h[0], h[1])).join(", ");
    abl.dataset.heads = fresh ? headsKey(a.heads) : "";
    abl.classList.toggle("hw-stale", !fresh);
    if (!local.selection.length) {
      ablTitle.textContent = "no heads ablated: select heads to zero them; predictions of the intact model";
    } else {
      ablTitle.textContent = `zero-ablating ${names}${fresh ? "" : ": computing"}`;
    }
    if (!fresh || (ablDrawn && ablDrawn.a === a && ablDrawn.tokens === tokens)) return;
    ablDrawn = { a, tokens };
    ablTable.replaceChildren();
    ablChips.replaceChildren();
    const none = a.heads.length === 0;
    const d = a.loss_after - a.loss_before;
    ablLoss.textContent = none
      ? `mean next-token loss ${a.loss_before.toFixed(3)}`
      : `mean next-token loss ${a.loss_before.toFixed(3)} \u2192 ${a.loss_after.toFixed(3)} (${d >= 0 ? "+" : ""}${d.toFixed(3)})`;
    const head = make("tr", null, ablTable);
    make("th", null, head, "#");
    make("th", null, head, none ? "next token" : "before");
    if (!none) make("th", null, head, "after");
    a.top_before.forEach(([tok, prob], r) => {
      const row = make("tr", null, ablTable);
      make("td", null, row, String(r + 1));
      const cells = none ? [["before", tok, prob]] : [["before", tok, prob], ["after", ...a.top_after[r]]];
      for (const [side, t, pr] of cells) {
        const td = make("td", `hw-pred hw-pred-${side}`, row, `${visible(t)}  ${(100 * pr).toFixed(1)}%`);
        td.dataset.token = t;
        td.dataset.prob = String(pr);
      }
    });
    if (!tokens || none) return;
    const before = toFloat32(a.token_loss_before);
    const after = toFloat32(a.token_loss_after);
    tokens.forEach((tok, j) => {
      const chip = make("span", "hw-chip", ablChips, visible(tok));
      if (j === 0) return; // the first token is never predicted
      const change = after[j - 1] - before[j - 1];
      const alpha = Math.min(1, Math.abs(change) / 2).toFixed(3);
      chip.style.background = change >= 0 ? `rgba(229, 57, 53, ${alpha})` : `rgba(30, 136, 229, ${alpha})`;
      chip.dataset.change = change.toFixed(4);
      chip.title = `loss ${before[j - 1].toFixed(3)} \u2192 ${after[j - 1].toFixed(3)}`;
    });
  }

  function showStatus() {
    if (disconnected) {
      root.dataset.state = "disconnected";
      status.classList.add("hw-error");
      status.textContent = "disconnected: the kernel was restarted or shut down; re-run the cell";
      return;
    }
    const s = model.get("status") || {};
    status.classList.toggle("hw-error", s.state === "error");
    root.dataset.state = inflight !== null ? "computing" : s.state || "";
    if (s.state === "error") {
      status.textContent = `error: ${s.message}`;
    } else if (inflight !== null || s.state === "computing") {
      const secs = ((performance.now() - sentAt) / 1000).toFixed(1);
      const prog = Number.isFinite(s.progress) ? ` ${Math.round(100 * s.progress)}%` : "";
      status.textContent = `computing${s.state === "computing" && s.message ? `: ${s.message}` : ""}${prog} (${secs} s)`;
      const silent = (performance.now() - heardAt) / 1000;
      if (inflight !== null && silent > model.get("reply_timeout")) {
        root.dataset.state = "stalled";
        status.textContent = `no answer from the kernel for ${silent.toFixed(0)} s: it may still be computing, or it was restarted or shut down (then re-run the cell)`;
      }
    } else {
      status.textContent = s.message || "";
    }
  }

  function redraw() {
    if (frame !== null) return;
    frame = requestAnimationFrame(() => {
      frame = null;
      drawNow();
    });
  }
  function drawNow() {
    if (frame !== null) cancelAnimationFrame(frame);
    frame = null;
    if (document.activeElement !== textBox && textBox.value !== local.text) textBox.value = local.text;
    kindSelect.value = local.kind;
    drawGrid();
    drawView();
    drawAblation();
    showStatus();
  }

  // ---- user actions ---------------------------------------------------------------------------
  for (const k of model.get("kinds")) {
    const opt = make("option", null, kindSelect, KIND_LABELS[k] || k);
    opt.value = k;
  }
  kindSelect.addEventListener("change", () => propose({ kind: kindSelect.value }));
  const runText = () => { if (textBox.value !== local.text) propose({ text: textBox.value }); };
  apply.addEventListener("click", runText);
  textBox.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runText(); }
  });
  reverse.addEventListener("change", () => drawView());

  gridCanvas.addEventListener("click", (e) => {
    const cell = cellAt(e);
    if (!cell) return;
    const has = local.selection.some((s) => sameHead(s, cell));
    let selection;
    let focus;
    if (e.shiftKey || e.ctrlKey || e.metaKey) {
      selection = has ? local.selection.filter((s) => !sameHead(s, cell)) : [...local.selection, cell];
      focus = has ? (sameHead(local.focus, cell) ? selection[selection.length - 1] || [] : local.focus) : cell;
    } else {
      selection = [cell];
      focus = cell;
    }
    // Two requests: the view's pattern comes back before the kernel starts on the ablation.
    if (!sameHead(focus, local.focus)) propose({ focus });
    propose({ selection });
    drawNow(); // draw the click at once (a prefetched pattern shows in this frame)
  });
  gridCanvas.addEventListener("mousemove", (e) => {
    const cell = cellAt(e);
    const g = currentGrid();
    if (!cell) { tip.hidden = true; return; }
    const v = g ? g.values[cell[0] * model.get("shape")[1] + cell[1]] : NaN;
    tip.textContent = `${headName(cell[0], cell[1])} ${local.kind} ${Number.isFinite(v) ? v.toFixed(3) : "n/a"}`;
    tip.hidden = false;
    tip.style.left = `${e.offsetX + 12}px`;
    tip.style.top = `${e.offsetY + 12}px`;
  });
  gridCanvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  tip.hidden = true;
  heatTip.hidden = true;

  chips.addEventListener("mouseover", (e) => {
    const chip = e.target.closest(".hw-chip");
    if (!chip || pinned !== null || Number(chip.dataset.index) === hover) return;
    hover = Number(chip.dataset.index);
    drawChips(currentPattern(), currentTokens());
  });
  chips.addEventListener("click", (e) => {
    const chip = e.target.closest(".hw-chip");
    if (!chip) return;
    const i = Number(chip.dataset.index);
    pinned = pinned === i ? null : i;
    hover = i;
    drawChips(currentPattern(), currentTokens());
  });
  heat.addEventListener("mousemove", (e) => {
    const p = currentPattern();
    const tokens = currentTokens();
    if (!p || !tokens) return;
    const T = p.shape[0];
    const r = heat.getBoundingClientRect();
    const j = Math.floor(((e.clientX - r.left) / r.width) * T);
    const i = Math.floor(((e.clientY - r.top) / r.height) * T);
    if (i < 0 || j < 0 || i >= T || j >= T) return;
    heatTip.textContent = `${visible(tokens[i])} \u2192 ${visible(tokens[j])}: ${p.values[i * T + j].toFixed(3)}`;
    heatTip.hidden = false;
    heatTip.style.left = `${e.offsetX + 12}px`;
    heatTip.style.top = `${e.offsetY + 12}px`;
  });
  heat.addEventListener("mouseleave", () => { heatTip.hidden = true; });

  // ---- kernel -> view -------------------------------------------------------------------------
  function syncFromKernel(key) {
    if (inflight === null && !(key in pending)) local[key] = model.get(key);
    redraw();
  }
  for (const key of ["text", "kind", "selection", "focus"]) on(`change:${key}`, () => syncFromKernel(key));
  on("change:grid", () => { readGrid(); redraw(); });
  on("change:text_tokens", () => {
    const t = model.get("text_tokens");
    if (t && t.text !== cache.text) {
      cache.text = t.text;
      cache.heads = new Map();
      cache.asked = new Set();
    }
    hover = null;
    pinned = null;
    redraw();
  });
  on("change:pattern", () => { readPattern(); drawView(); }); // at once: clicks wait on this
  on("change:ablation", redraw);
  on("change:status", () => {
    heardAt = performance.now();
    answered();
    showStatus();
    const s = model.get("status") || {};
    if (s.state === "done") prefetch();
    redraw();
  });

  // Jupyter's widget manager marks the view when the kernel restarts or dies; no answer will come.
  on("comm_live_update", () => setTimeout(() => {
    if (!el.closest(".jupyter-widgets-disconnected")) return;
    disconnected = true;
    inflight = null;
    pending = {};
    for (const input of [textBox, kindSelect, apply, reverse]) input.disabled = true;
    showStatus();
  }, 0));

  readGrid();
  cache.text = (model.get("text_tokens") || {}).text || null;
  readPattern();
  clock = setInterval(() => { if (inflight !== null) showStatus(); }, 200);
  drawNow();
  prefetch();

  return () => {
    for (const [event, cb] of listeners) model.off(event, cb);
    if (frame !== null) cancelAnimationFrame(frame);
    clearInterval(clock);
    el.replaceChildren();
  };
}

export default { render };
