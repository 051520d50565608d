"""One self-contained HTML file of the widget: it opens from disk with no kernel and no network.

`save_html(model, path, text, heads=...)` computes what the widget would show of `text` — the grid
of every score kind, the patterns of the chosen heads, the ablation of each of them alone and of the
selection — and writes it into one HTML file with the front end (js/widget.js, widget.css) inlined.
In the page, js/static.js stands in for the kernel: it answers the view's requests (the messages of
`mlx_headwidget.wire`) from the saved data, so clicks, hover and the token view work for what the
file holds, and a request for anything else (another text, a head not saved) is answered with an
error the view shows. A Content-Security-Policy forbids every request outside the file.

The patterns are float16, as the widget sends them; which heads: `heads`, or (None) the selected
heads then the best heads of the grid, as many as fit in `pattern_bytes`.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import wire
from .detect import GRID_KINDS
from .errors import WidgetInputError
from .session import HeadSession

PATTERN_BYTES = 1_500_000  # float16 pattern bytes a page holds by default (base64: 4/3 of it)
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
    "img-src data:; connect-src 'none'"
)


@dataclass(frozen=True)
class SavedPage:
    """What `save_html` wrote: the file, its size in bytes, the heads whose patterns it holds."""

    path: Path
    nbytes: int
    heads: list[tuple[int, int]]


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element: no "<" can close it."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def _heads_for_page(
    session: HeadSession, text: str, kind: str, selection: list, heads: list | None, budget: int
) -> list[tuple[int, int]]:
    """`heads` as given (checked), or the selection then the best heads of `kind`'s grid while
    their float16 (T, T) patterns fit in `budget` bytes."""
    L, H = session.model.n_layers, session.model.n_heads
    if heads is not None:
        return [tuple(wire.pair(h, "head", [L, H])) for h in heads]
    T = len(session.tokens(text))
    fits = max(0, budget // (2 * T * T))
    chosen = [tuple(h) for h in selection]
    for head in wire.best_heads(session.grid(text, kind), L * H, skip=set(chosen)):
        if len(chosen) >= fits:
            break
        chosen.append(head)
    return chosen[:fits]


def page_data(
    session: HeadSession,
    text: str,
    *,
    kind: str = "induction",
    selection: list | tuple = (),
    heads: list | None = None,
    pattern_bytes: int = PATTERN_BYTES,
    kinds: tuple[str, ...] = GRID_KINDS,
    step: int | None = None,
) -> tuple[dict, list[bytes]]:
    """The data a page holds, as {"state", "parts", "patterns", "ablations"} with arrays packed as
    `wire` packs them, and the buffers. Every part is `wire.part` of the widget's own session, so
    the page shows the numbers the widget shows; `step`: the training step of `session`'s
    weights, which the parts carry (a page has no slider: it holds one step)."""
    if kind not in kinds:
        raise WidgetInputError(f"kind {kind!r} is not among the saved kinds {list(kinds)}")
    shape = [session.model.n_layers, session.model.n_heads]
    selection = [wire.pair(h, "selected head", shape) for h in selection]
    chosen = _heads_for_page(session, text, kind, selection, heads, pattern_bytes)
    focus = list(selection[-1]) if selection else (list(chosen[0]) if chosen else [])
    state = {"text": text, "kind": kind, "selection": selection, "focus": focus, "step": step}
    state["attend_to"] = []  # a saved page holds no "attention to token" grid
    buffers: list[bytes] = []
    pack = lambda value: wire.pack(value, buffers)  # noqa: E731
    grids = {k: pack(wire.part(session, "grid", {**state, "kind": k})) for k in kinds}
    patterns = {
        f"{layer},{head}": pack(wire.part(session, "pattern", {**state, "focus": [layer, head]}))
        for layer, head in chosen
    }
    ablations = {}
    for heads_on in [[], selection] + [[list(h)] for h in chosen]:
        key = ",".join(sorted(f"L{h[0]}H{h[1]}" for h in heads_on))
        if key not in ablations:
            ablations[key] = pack(wire.part(session, "ablation", {**state, "selection": heads_on}))
    data = {
        "state": {**state, "kinds": list(kinds), "shape": shape},
        "tokens": wire.part(session, "tokens", state),
        "grids": grids,
        "patterns": patterns,
        "ablations": ablations,
    }
    return data, buffers


def render_page(data: dict, buffers: list[bytes], title: str) -> str:
    """The HTML text of a page holding `data` and `buffers` (base64), the front end inlined."""
    blob = {"data": data, "buffers": [base64.b64encode(b).decode("ascii") for b in buffers]}
    widget_js = wire.asset("widget.js").read_text(encoding="utf-8")
    json_script = '<script type="application/json" id="mlx-headwidget'
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{wire.asset('widget.css').read_text(encoding='utf-8')}</style>",
            "<style>body{margin:16px;font-family:system-ui,sans-serif}</style>",
            "</head><body>",
            f"<h3>{html.escape(title)}</h3>",
            '<div id="mlx-headwidget"></div>',
            f'{json_script}-data">{_script_json(blob)}</script>',
            f'{json_script}-esm">{_script_json(widget_js)}</script>',
            f'<script type="module">{wire.asset("static.js").read_text(encoding="utf-8")}</script>',
            "</body></html>",
        ]
    )


def save_html(
    model,
    path: str | Path,
    text: str,
    *,
    kind: str = "induction",
    selection: list | tuple = (),
    heads: list | None = None,
    pattern_bytes: int = PATTERN_BYTES,
    title: str | None = None,
    session: HeadSession | None = None,
    step: int | None = None,
) -> SavedPage:
    """Write the widget for `model` (an InterpretableModel) and `text` as one HTML file.

    `heads`: the heads whose patterns (and single-head ablations) the page holds; None: the
    `selection`, then the best heads of `kind`'s grid while their patterns fit in `pattern_bytes`.
    Every grid kind is saved. `session`: a HeadSession of `model` whose cache to reuse (the widget
    passes its own). `step`: the training step of the weights, named in the default title.
    Returns the file, its size and the saved heads.
    """
    session = session if session is not None else HeadSession(model)
    data, buffers = page_data(
        session, text, kind=kind, selection=selection, heads=heads, pattern_bytes=pattern_bytes,
        step=step,
    )  # fmt: skip
    L, H = data["state"]["shape"]
    default = f"mlx_headwidget: {model.architecture} model, {L} layers x {H} heads"
    default += "" if step is None else f", training step {step}"
    page = render_page(data, buffers, title or default)
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    heads_saved = [tuple(int(x) for x in k.split(",")) for k in data["patterns"]]
    return SavedPage(path, path.stat().st_size, heads_saved)
