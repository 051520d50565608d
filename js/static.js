// The kernel's stand-in in a page saved by mlx_headwidget.export.save_html: it reads the data saved
// in the page and answers the view's requests (see mlx_headwidget/wire.py) from it, so the view
// (widget.js, inlined in the page as text and imported from a blob: URL) runs as in a notebook.
// Whatever the page does not hold (another text, a head not saved) is answered with an error
// that the view shows. No request leaves the page.

const read = (id) => JSON.parse(document.getElementById(id).textContent);

function decode(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new DataView(bytes.buffer);
}

const headLabel = (h) => `L${h[0]}H${h[1]}`;
const headsKey = (heads) => heads.map(headLabel).sort().join(",");

// The saved result of one part of `state`, or throw the sentence the view shows.
function savedPart(data, name, state) {
  if (name === "tokens") return data.tokens;
  if (name === "grid") {
    if (!(state.kind in data.grids)) throw new Error(`the ${state.kind} grid is not saved in this page`);
    return data.grids[state.kind];
  }
  if (name === "pattern") {
    if (state.focus.length !== 2) return {};
    const saved = data.patterns[state.focus.join(",")];
    if (!saved) {
      const n = Object.keys(data.patterns).length;
      throw new Error(`${headLabel(state.focus)}'s pattern is not saved in this page (it holds ${n} heads' patterns)`);
    }
    return saved;
  }
  if (name === "ablation") {
    const saved = data.ablations[headsKey(state.selection)];
    if (!saved) throw new Error(`the ablation of ${headsKey(state.selection) || "no head"} is not saved in this page`);
    return saved;
  }
  throw new Error(`unknown part ${name}`);
}

function standInModel(data, buffers) {
  const state = { ...data.state, status: { state: "done", message: "saved page: no kernel" }, reply_timeout: 1e9 };
  const handlers = {};
  const emit = (event, ...args) => { for (const cb of [...(handlers[event] || [])]) cb(...args); };
  const answer = ({ id, op, args }) => {
    if (op !== "set") return { id, ok: false, error: `a saved page cannot answer ${op}` };
    const next = { ...state, ...(args.changes || {}) };
    if (next.text !== data.state.text) {
      return { id, ok: false, error: "this page holds the text it was saved with; edit text in the notebook" };
    }
    try {
      const result = {};
      for (const name of args.want || []) result[name] = savedPart(data, name, next);
      for (const key of ["text", "kind", "selection", "focus"]) state[key] = next[key];
      return { id, ok: true, result, seconds: null }; // null: not timed by a kernel (wire.py)
    } catch (err) {
      return { id, ok: false, error: err.message };
    }
  };
  return {
    get: (key) => state[key],
    set: (key, value) => { state[key] = value; },
    save_changes: () => {},
    on: (event, cb) => { (handlers[event] = handlers[event] || []).push(cb); },
    off: (event, cb) => { handlers[event] = (handlers[event] || []).filter((f) => f !== cb); },
    // answered after the caller returns, as a kernel's reply arrives
    send: (content) => { const reply = answer(content); setTimeout(() => emit("msg:custom", reply, buffers), 0); },
  };
}

const saved = read("mlx-headwidget-data");
const buffers = saved.buffers.map(decode);
const source = read("mlx-headwidget-esm");
const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
const widget = (await import(url)).default;
widget.render({ model: standInModel(saved.data, buffers), el: document.getElementById("mlx-headwidget") });
