"""Widget speed, measured in a real JupyterLab and chromium; prints a table.

  click -> pattern drawn, against a bare anywidget round trip (click -> Python -> reply drawn)
          measured in the same page and run: kernel computes the pattern / kernel has it cached /
          the browser prefetched it; on a JupyterLab with its default settings and on one started
          with `mlx_headwidget.server.SETTING` (TCP_NODELAY on the kernel websocket);
  grid draw time at 16 x 32 and 32 x 64 heads (random-weight models of those shapes);
  bytes sent for one head's pattern at T = 256 and 1024, and for the grid;
  ablation of one head (the widget's computation, median over every head) against one plain
  forward pass, and the same ablations each running the whole forward.

Usage: LD_PRELOAD=<OpenBLAS> python bench/bench_widget.py [--model bundled|tiny|SOURCE] [--clicks N]
SOURCE is anything InterpretableModel loads: an mlx-lm folder, a .gguf file, smollm2-135m.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "browser")]

from harness import (  # noqa: E402
    diagnose,
    launched_browser,
    open_and_run,
    running_lab,
    write_notebook,
)

from mlx_headwidget import InterpretableModel, analysis, wire  # noqa: E402
from mlx_headwidget.session import HeadSession  # noqa: E402
from mlx_headwidget.testing import make_checkpoint  # noqa: E402

TEXTS = [
    "The cat sat on the mat. The cat sat on the mat because the mat was warm and soft.",
    "Return the number of items in a container. Return the number of items in a list.",
    "Open the file and read the lines. Open the file and write the lines back again.",
    "A dog ran to the park and a dog ran home. A dog ran to the park and back again.",
    "Add the two numbers and print the sum. Add the two numbers and return the sum.",
    "She said that the train was late. She said that the train was late again today.",
]
PING_JS = """export default { render({ model, el }) {
  const b = document.createElement("button");
  b.className = "bench-ping"; b.textContent = "ping"; el.appendChild(b);
  b.addEventListener("click", () => {
    model.set("ping", model.get("ping") + 1); model.save_changes(); });
  const show = () => { b.dataset.pong = String(model.get("pong")); };
  model.on("change:pong", show); show();
} };"""
PING_CELL = f"""import anywidget, traitlets
class Ping(anywidget.AnyWidget):
    _esm = {PING_JS!r}
    ping = traitlets.Int(0).tag(sync=True)
    pong = traitlets.Int(0).tag(sync=True)
    @traitlets.observe("ping")
    def _answer(self, change):
        self.pong = change["new"]
Ping()"""
# Time from a click to a DOM mark the reply sets, inside the page (performance.now()).
TIME_PING = """async () => {
  const b = document.querySelector('.bench-ping'); const before = b.dataset.pong;
  const done = new Promise(res => { const o = new MutationObserver(() => {
    if (b.dataset.pong !== before) { o.disconnect(); res(performance.now()); } });
    o.observe(b, {attributes: true}); });
  const t0 = performance.now(); b.click(); return (await done) - t0; }"""
# The widget's test hooks (js/widget.js): `hooks` on each view's .hw-root. The time from a click to
# the heatmap's next draw ("pattern"), and the grid's draw time.
TIME_CLICK = """async ([index, layer, head]) => {
  const root = document.querySelectorAll('.hw-root')[index]; const hooks = root.hooks;
  const grid = root.querySelector('.hw-grid');
  const done = new Promise(res => { const off = hooks.on('pattern', () => {
    off(); res(performance.now()); }); });
  const r = grid.getBoundingClientRect(); const {cell, left, top} = hooks.geometry;
  const x = r.left + left + (head + 0.5) * cell; const y = r.top + top + (layer + 0.5) * cell;
  const t0 = performance.now();
  grid.dispatchEvent(new MouseEvent('click', {clientX: x, clientY: y, bubbles: true}));
  const t1 = await done;
  return {ms: t1 - t0, draw: hooks.gridDrawMs}; }"""


# Shift-click the head in view when it is the only one selected: nothing selected, no head in view.
CLEAR = """([index, layer, head]) => {
  const root = document.querySelectorAll('.hw-root')[index];
  const grid = root.querySelector('.hw-grid'); const {cell, left, top} = root.hooks.geometry;
  const r = grid.getBoundingClientRect();
  grid.dispatchEvent(new MouseEvent('click', {shiftKey: true, bubbles: true,
    clientX: r.left + left + (head + 0.5) * cell, clientY: r.top + top + (layer + 0.5) * cell}));
}"""


def idle(page, index: int) -> None:
    page.wait_for_function(
        "i => document.querySelectorAll('.hw-root')[i]?.hooks.state === 'done'", arg=index
    )


def set_text(page, index: int, text: str) -> None:
    root = page.locator(".hw-root").nth(index)
    root.locator(".hw-text").fill(text)
    root.locator(".hw-apply").click()
    page.wait_for_function(
        """([i, t]) => { const r = document.querySelectorAll('.hw-root')[i];
          return r.querySelectorAll('.hw-view .hw-chip').length > 0 && r.hooks.state === 'done'
            && r.querySelector('.hw-text').value === t; }""",
        arg=[index, text],
    )


def stats(xs: list[float]) -> tuple[float, float]:
    """(median, p95); NaN for no samples."""
    if not xs:
        return float("nan"), float("nan")
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def browser_numbers(
    source: str | None, shapes: dict[str, str], clicks: int, nodelay: bool = False
) -> dict:
    """Timings (ms) measured in the page, one list per measurement."""
    cells = [
        PING_CELL,
        "from mlx_headwidget import InterpretableModel\n"
        "from mlx_headwidget.widget import HeadWidget\n"
        f"model = InterpretableModel({source!r})\n"
        f"HeadWidget(model, text={TEXTS[0]!r}, prefetch_bytes=0)",
        f"HeadWidget(model, text={TEXTS[0]!r})",
        *(f"HeadWidget(InterpretableModel({p!r}), text={TEXTS[0]!r})" for p in shapes.values()),
    ]
    out: dict = {"ping": [], "cold": [], "warm": [], "prefetched": []}
    with tempfile.TemporaryDirectory() as tmp, running_lab(Path(tmp), nodelay=nodelay) as lab:
        write_notebook(lab.root / "bench.ipynb", cells)
        with launched_browser() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            with diagnose(page, Path(tmp) / "failure", lab):
                return _measure(page, lab, shapes, clicks, out)


def _measure(page, lab, shapes: dict[str, str], clicks: int, out: dict) -> dict:
    """The timings, in one page: widgets 0 (no prefetch), 1 (prefetch), 2 and 3 (grid shapes)."""
    open_and_run(page, lab.url("lab/tree/bench.ipynb"), timeout=300_000)
    page.wait_for_function(
        "() => document.querySelectorAll('.hw-root').length === 4", timeout=300_000
    )
    for i in range(4):
        idle(page, i)
    L, H = page.evaluate("() => document.querySelector('.hw-root').hooks.drawn.grid.shape")
    heads = [(layer, head) for head in range(H) for layer in range(L)]
    for text in TEXTS:  # prefetch off: every click is answered by the kernel
        # With no head in view, a new text computes no pattern: the text's first click has the
        # kernel compute them (every head of a small model in one forward), the next are cached.
        set_text(page, 0, text)
        for k, (layer, head) in enumerate(heads[: max(clicks, L)]):
            out["ping"].append(page.evaluate(TIME_PING))
            ms = page.evaluate(TIME_CLICK, [0, layer, head])["ms"]
            out["warm" if k else "cold"].append(ms)
            idle(page, 0)
        page.evaluate(CLEAR, [0, layer, head])
        page.wait_for_function(
            "() => document.querySelector('.hw-root').hooks.drawn.pattern === null"
        )
        idle(page, 0)
    page.wait_for_function(  # the prefetching widget: every head is in the browser
        "n => document.querySelectorAll('.hw-root')[1].hooks.prefetched >= n",
        arg=L * H,
        timeout=120_000,
    )
    for layer, head in heads[:clicks]:
        out["prefetched"].append(page.evaluate(TIME_CLICK, [1, layer, head])["ms"])
        idle(page, 1)
    for index, name in enumerate(shapes, start=2):
        draws = []
        for k in range(clicks):
            draws.append(page.evaluate(TIME_CLICK, [index, k % 16, (7 * k) % 32])["draw"])
            idle(page, index)
        out[f"grid {name}"] = draws
    return out


def wire_bytes(model: InterpretableModel, text: str) -> tuple[int, int, int]:
    """(T, bytes of the message carrying one head's pattern, bytes of the one carrying the grid):
    the JSON and the binary buffers of each, as the widget sends them (`mlx_headwidget.wire`)."""
    session = HeadSession(model)
    state = {"text": text, "kind": "induction", "selection": [], "focus": [0, 0]}

    def size(name: str) -> int:
        buffers: list = []
        message = {"id": "x-1", "ok": True, "part": True, "result": {name: None}}
        message["result"][name] = wire.part(session, name, state)
        header = json.dumps(wire.pack(message, buffers))
        return len(header) + sum(len(b) for b in buffers)

    return len(session.tokens(text)), size("pattern"), size("grid")


def text_of_length(model: InterpretableModel, T: int) -> str:
    """A text of exactly T tokens (BOS included): words, then " a" one token at a time."""
    words = ["the", "cat", "sat", "on", "mat", "and", "then", "it", "ran", "off"]
    text = "the"
    while model.to_tokens(text).shape[1] < T - 8:
        text += " " + words[len(text) % len(words)]
    while model.to_tokens(text).shape[1] < T:
        text += " a"
    if model.to_tokens(text).shape[1] != T:
        raise ValueError(f"could not build a text of exactly {T} tokens")
    return text


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ablation_numbers(model: InterpretableModel, text: str, repeats: int = 3) -> dict[str, float]:
    """Median seconds of: one plain mlx-lm forward; the widget's one-head ablation (the clean run
    of the text computed once, keeping each layer's output, as `HeadSession` does), over every
    head in turn (early layers cost a whole forward, late ones little); the same ablations with
    a clean run that keeps no layer outputs (every ablation a whole forward)."""
    tokens = model.to_tokens(text)
    forward = timed(lambda: mx.eval(model.model(tokens)), 7)
    heads = [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
    out = {"forward": forward}
    for name, keep in (("ablation", True), ("ablation, whole forward", False)):
        clean = analysis.ablation_effect(model, tokens, [], keep_layer_outputs=keep)
        times = []
        for _ in range(repeats):
            for head in heads:
                t0 = time.perf_counter()
                analysis.ablation_effect(model, tokens, [head], baseline=clean)
                times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def print_browser_table(page: dict, server: str) -> None:
    ping = stats(page["ping"])[0]
    rows = [("bare anywidget round trip", *stats(page["ping"]), len(page["ping"]), "", "1.00x")]
    for key, label, target in [
        ("cold", "click -> pattern drawn, kernel computes it", "<= 1.2x"),
        ("warm", "click -> pattern drawn, kernel has it cached", "<= 1.1x"),
        ("prefetched", "click -> pattern drawn, prefetched", "< 16 ms"),
        ("grid 16x32", "grid draw 16 x 32", "< 30 ms"),
        ("grid 32x64", "grid draw 32 x 64", "< 30 ms"),
    ]:
        med, p95 = stats(page[key])
        rows.append((label, med, p95, len(page[key]), target, f"{med / ping:.2f}x"))
    head = f"{'in the browser (ms), ' + server:48} {'median':>8} {'p95':>8} {'n':>4}"
    print(f"{head}  {'target':>8}  vs bare")
    for label, med, p95, n, target, ratio in rows:
        print(f"{label:48} {med:8.1f} {p95:8.1f} {n:4d}  {target:>8}  {ratio}")
    print()


def print_first_grid(model: InterpretableModel, pings: dict[str, float], repeats: int = 3) -> None:
    """The kernel's work for a new widget's first answer (text tokens and the whole induction
    grid, by a fresh HeadSession, which scores every head) against each server's round trip."""

    def first() -> None:
        session = HeadSession(model)
        session.tokens(TEXTS[0])
        session.grid(TEXTS[0], "induction")

    seconds = timed(first, repeats)
    print(f"first grid, kernel (new HeadSession), median of {repeats}: {seconds:.3f} s")
    for server, ping in pings.items():
        print(f"  {1000 * seconds / ping:.1f}x the bare round trip ({ping:.1f} ms), {server}")
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="bundled", help="bundled | tiny | a folder, .gguf or smollm2-135m"
    )
    parser.add_argument("--clicks", type=int, default=16)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_widget_"))
    source = {"bundled": None, "tiny": None}.get(args.model, args.model)
    if args.model == "tiny":
        source = str(make_checkpoint("llama", tmp / "tiny"))
    shapes = {
        "16x32": str(
            make_checkpoint(
                "llama",
                tmp / "g16",
                num_hidden_layers=16,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=4,
                hidden_size=64,
            )
        ),
        "32x64": str(
            make_checkpoint(
                "llama",
                tmp / "g32",
                num_hidden_layers=32,
                num_attention_heads=64,
                num_key_value_heads=8,
                head_dim=4,
                hidden_size=64,
            )
        ),
    }
    long_model = InterpretableModel(
        make_checkpoint("llama", tmp / "long", max_position_embeddings=2048)
    )
    model = InterpretableModel(source)
    blas = (
        "OpenBLAS preloaded"
        if "openblas" in os.environ.get("LD_PRELOAD", "")
        else "MLX's bundled BLAS"
    )
    print(f"model: {model!r}\nBLAS: {blas}; {os.cpu_count()} CPUs\n")

    for nodelay, server in ((False, "JupyterLab, default settings"), (True, "with server.SETTING")):
        page = browser_numbers(source, shapes, args.clicks, nodelay)
        print_browser_table(page, server)
        print_first_grid(model, {server: stats(page["ping"])[0]})
    print(f"{'bytes sent (one message: JSON + buffers)':48} {'T':>6} {'bytes':>12}  target")
    for T in (256, 1024):
        t, pattern, grid = wire_bytes(long_model, text_of_length(long_model, T))
        print(f"{'one head pattern, float16':48} {t:6d} {pattern:12,d}  <= 2.1 MB at 1024")
    for name, path in shapes.items():
        _, _, grid = wire_bytes(InterpretableModel(path), TEXTS[0])
        print(f"{'grid ' + name + ', float32':48} {'':6} {grid:12,d}")

    text = TEXTS[0] * 4
    seconds = ablation_numbers(model, text)
    T, forward = model.to_tokens(text).shape[1], seconds["forward"]
    head = f"{'ablation of one head (s, median over every head)':48} {'T':>6} {'seconds':>12}"
    print(f"\n{head}  ratio  target")
    print(f"{'one plain forward (mlx-lm)':48} {T:6d} {forward:12.4f}  1.00x")
    for name, label, target in (
        ("ablation", "ablation_effect, clean run with layer outputs", "<= 1.5x"),
        ("ablation, whole forward", "ablation_effect, clean run without them", ""),
    ):
        print(f"{label:48} {T:6d} {seconds[name]:12.4f}  {seconds[name] / forward:.2f}x  {target}")


if __name__ == "__main__":
    main()
