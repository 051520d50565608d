"""HeadWidget end to end: a real JupyterLab (and Notebook 7) server, Debian's chromium, the model.

The notebook runs `HeadWidget` in its own kernel; this process loads the same model and computes
the expected values with the library. The checks read what a user sees: the pixels of the grid,
heatmap and legend canvases against the colour scale stated below applied to the expected values,
and the text and colours of titles, tooltips, token chips, predictions and the status line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from harness import (
    Lab,
    diagnose,
    launched_browser,
    open_and_run,
    restart_kernel,
    running_lab,
    running_marimo,
    shut_down_kernel,
    write_notebook,
)
from PIL import Image
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from mlx_headwidget import InterpretableModel
from mlx_headwidget.analysis import ablation_effect, head_pattern, head_patterns, score_grid
from mlx_headwidget.timeline import bundled_checkpoints, load_checkpoint

TEXT = "The cat sat on the mat. The cat sat on the mat."
NEW_TEXT = "Return the number of items in a list. Return the number of items in a list."
REPLY_TIMEOUT = 2.0  # seconds, given to the widgets below
expect.set_options(timeout=30_000)  # Playwright's default for page waits (expect's is 5 s)

# ---- what the page must show ----------------------------------------------------------------
# The colour scale of the grid, heatmap and legend: viridis at 0, 1/8, ..., 1 (matplotlib's
# viridis there within 3 levels), linearly interpolated, each channel rounded half up; values
# clipped to [0, 1]; NaN grey. The heatmap shows sqrt(attention) of the float16 pattern sent.
VIRIDIS9 = np.array(
    [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
     [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]],
    dtype=np.float64,
)  # fmt: skip
NAN_GREY = (200, 200, 200)
FOCUS_RING = (255, 61, 0)  # around the grid cell of the head in view
SELECTED_RING = (255, 255, 255)  # around the other selected heads
# Colour levels (0-255) a pixel may differ from the scale's colour of the expected value.
# Measured: 0 at every pixel these tests sample (about 1,150 grid and 3,400 heatmap pixels), with
# this process on OpenBLAS, on OpenBLAS with OPENBLAS_CORETYPE=Haswell and on MLX's bundled BLAS:
# fills and 2-px rings lie on whole pixels (no antialiasing where sampled). But the scale rises
# by up to 664 levels per unit, so a value that differs between the two processes (below) moves
# its colour by up to 3e-4 level (grid) or 0.33 level (a float16 step of a pattern, in sqrt)
# and can round to the neighbouring level: 1. A wrong scale, a blank or stale canvas is off by
# tens of levels.
COLOUR_TOL = 1

# Largest differences measured between the kernel (HeadWidget) and this process (the library) on
# the bundled model, both texts, every head and head pair, each process run with OpenBLAS
# preloaded (default and OPENBLAS_CORETYPE=Haswell, Zen, SkylakeX, Sandybridge) or MLX's bundled
# BLAS, on an AMD EPYC: grid scores 4.0e-7, next-token probabilities 8.9e-7, per-token losses and
# their change 2.9e-5, the pattern sent as float16 against float32 here 2.44e-4 (its rounding).
# Tolerances: 5x the measured differences; the pattern's is the float16 rounding itself.
GRID_TOL = 2e-6
PROB_TOL = 5e-6
LOSS_TOL = 1.5e-4
PATTERN_TOL = 2.5e-4
PRINTED = 5e-4  # half a unit of the third decimal: numbers are printed with 3 decimals
PERCENT = 5e-4  # half a unit of 0.1 %: probabilities are printed as percentages with 1 decimal
# Chrome keeps a CSS colour's alpha in 8 bits and reads it back as the shortest decimal giving
# the same byte ("0.143" set, "0.14" read): within 1/510 + 1/510 of the value set.
ALPHA = 1 / 255
HOVER_RGB = (255, 87, 34)  # chips of the hovered token's attention; alpha = weight
LOSS_UP, LOSS_DOWN = (229, 57, 53), (30, 136, 229)  # per-token loss change; alpha = |change| / 2


def scale_colour(values: np.ndarray) -> np.ndarray:
    """(...,) values -> (..., 3) int colours of the colour scale above."""
    v = np.asarray(values, dtype=np.float64)
    x = np.clip(np.nan_to_num(v, nan=0.0, posinf=1.0, neginf=0.0), 0, 1) * 8
    i = np.minimum(7, np.floor(x)).astype(int)
    f = (x - i)[..., None]
    rgb = np.floor(VIRIDIS9[i] + f * (VIRIDIS9[i + 1] - VIRIDIS9[i]) + 0.5).astype(int)
    rgb[~np.isfinite(v)] = NAN_GREY
    return rgb


def pattern_colour(pattern: np.ndarray) -> np.ndarray:
    """(T, T) attention -> (T, T, 3): sqrt of the float16 value the kernel sends."""
    sent = pattern.astype(np.float16).astype(np.float64)
    return scale_colour(np.sqrt(np.maximum(0.0, sent)))


def visible(token: str) -> str:
    """A token as the widget prints it: space, newline and tab made visible, '' as the empty set."""
    return token.replace(" ", "\u00b7").replace("\n", "\u21b5").replace("\t", "\u2192") or "\u2205"


# ---- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One Jupyter server for the module."""
    with running_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium for the module."""
    with launched_browser() as b:
        yield b


@pytest.fixture(scope="module")
def model_source() -> str | None:
    """What the notebooks pass to HeadWidget: None, the bundled default model."""
    return None


@pytest.fixture(scope="module")
def model(model_source: str | None) -> InterpretableModel:
    return InterpretableModel(model_source)


def widget_notebook(
    path: Path, source: str | None, views: int = 1, extra: str = "", args: str = ""
) -> Path:
    """A notebook whose one cell shows a HeadWidget `w` on TEXT (and keyword arguments `args`),
    displayed `views` times, after running `extra` (code that may use `w`)."""
    return write_notebook(
        path,
        [
            "from mlx_headwidget import InterpretableModel, timeline\n"
            "from mlx_headwidget.widget import HeadWidget\n"
            f"model = InterpretableModel({source!r})\n"
            f"w = HeadWidget(model, text={TEXT!r}, reply_timeout={REPLY_TIMEOUT}{args})\n"
            + extra
            + "display(w)\n" * (views - 1)
            + "w"
        ],
    )


# ---- reading the canvases -------------------------------------------------------------------
# The page is reached through Playwright locators (they see into shadow roots, where marimo puts
# widgets) and the widget's documented test hooks: `hooks` on each view's .hw-root (js/widget.js).
CANVAS_INFO = """c => c && c.width && c.height ? {width: c.width, height: c.height,
    cssWidth: c.getBoundingClientRect().width} : null"""

# The colours [r, g, b] of the canvas's pixels (xs[n], ys[n]); null outside the canvas.
PIXELS_AT = """([c, xs, ys]) => { if (!c || !c.width) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  return xs.map((x, n) => x < c.width && ys[n] < c.height
    ? Array.from(d.subarray(4 * (ys[n] * c.width + x), 4 * (ys[n] * c.width + x) + 3)) : null); }"""

# True when the canvas shows colour rgb[n] (within tol) at every pixel (xs[n], ys[n]).
CANVAS_SHOWS = """([c, xs, ys, rgb, tol]) => { if (!c || !c.width) return false;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  return xs.every((x, n) => x < c.width && ys[n] < c.height && [0, 1, 2].every((k) =>
    Math.abs(d[4 * (ys[n] * c.width + x) + k] - rgb[n][k]) <= tol)); }"""


def canvas_info(page: Page, selector: str, nth: int = 0) -> dict:
    """The canvas's size in pixels and its pixels per CSS px ("scale")."""
    c = page.locator(selector).nth(nth).evaluate(CANVAS_INFO)
    assert c is not None, f"no drawn canvas {selector} #{nth}"
    return {**c, "scale": c["width"] / c["cssWidth"]}


def hooks(page: Page, expression: str, view: int = 0):
    """`expression` of the view's test hooks `h` (js/widget.js), e.g. "h.geometry"."""
    return (
        page.locator(".hw-root")
        .nth(view)
        .evaluate(f"r => {{ const h = r.hooks; return {expression}; }}")
    )


def expect_pixels(
    page: Page, selector: str, nth: int, xy: np.ndarray, want: np.ndarray, what: str
) -> None:
    """Wait until the canvas shows colours `want` (n, 3) at pixels `xy` (n, 2), then assert it
    (on a timeout the assert says which pixels differ and by how much)."""
    xs, ys = (xy[:, 0].tolist(), xy[:, 1].tolist())
    canvas = page.locator(selector).nth(nth).element_handle()
    try:
        page.wait_for_function(CANVAS_SHOWS, arg=[canvas, xs, ys, want.tolist(), COLOUR_TOL])
    except PlaywrightTimeout:
        pass
    got = page.evaluate(PIXELS_AT, [canvas, xs, ys])
    assert got is not None and None not in got, f"{what}: canvas too small or absent: {got}"
    got = np.array(got, dtype=np.int64)
    off = np.abs(got - want).max(axis=1)
    bad = np.flatnonzero(off > COLOUR_TOL)
    assert bad.size == 0, (
        f"{what}: {bad.size} of {len(off)} pixels differ by up to {off.max()} levels; first at "
        f"{xy[bad[0]].tolist()}: drawn {got[bad[0]].tolist()}, expected {want[bad[0]].tolist()}"
    )


def grid_geometry(page: Page, view: int = 0) -> dict:
    """Cell size and grid origin in CSS px (the view's hooks.geometry), px per CSS px."""
    page.locator(".hw-grid").nth(view).wait_for()  # drawn (grey until scored) once rendered
    c = canvas_info(page, ".hw-grid", view)
    return {**hooks(page, "h.geometry", view), "px": c["scale"]}


def cell_point(geo: dict, layer: int, head: int, dx: float, dy: float) -> tuple[float, float]:
    """A point of cell (layer, head) in CSS px, (dx, dy) from its top left corner."""
    return geo["left"] + head * geo["cell"] + dx, geo["top"] + layer * geo["cell"] + dy


def expect_grid(
    page: Page,
    values: np.ndarray,
    selected: list[tuple[int, int]] = (),
    focus: tuple[int, int] | None = None,
    view: int = 0,
) -> None:
    """The grid canvas shows `values` (n_layers, n_heads) in the colour scale at each cell's centre,
    an orange ring on `focus`, a white ring on the other `selected` heads and none elsewhere."""
    geo = grid_geometry(page, view)
    c = geo["cell"]
    L, H = values.shape
    want_fill = scale_colour(values).reshape(-1, 3)
    want_ring = want_fill.copy()
    for layer, head in selected:
        want_ring[layer * H + head] = FOCUS_RING if (layer, head) == focus else SELECTED_RING
    cells = [(layer, head) for layer in range(L) for head in range(H)]
    # the fill's centre, and the ring's left edge (a 2-px line over the cell's first pixels)
    centre = [cell_point(geo, layer, head, c // 2, c // 2) for layer, head in cells]
    edge = [cell_point(geo, layer, head, 0, c // 2) for layer, head in cells]
    xy = np.floor(np.array(centre + edge) * geo["px"]).astype(int)
    want = np.concatenate([want_fill, want_ring])
    expect_pixels(page, ".hw-grid", view, xy, want, "grid cells and selection rings")


def expect_heatmap(page: Page, pattern: np.ndarray, view: int = 0) -> None:
    """The heatmap canvas shows `pattern` (T, T), one pixel per (query, key), at full opacity."""
    T = pattern.shape[0]
    i, j = np.mgrid[0:T, 0:T]
    xy = np.stack([j.ravel(), i.ravel()], axis=1)
    want = pattern_colour(pattern).reshape(-1, 3)
    expect_pixels(page, ".hw-heatmap", view, xy, want, f"heatmap of a {T}-token pattern")
    heat = page.locator(".hw-heatmap").nth(view)
    expect(heat).to_be_visible()
    opacity = heat.evaluate(
        """c => { let o = 1; for (let e = c; e && !e.classList.contains('hw-root');
          e = e.parentElement) o *= +getComputedStyle(e).opacity; return o; }"""
    )
    assert opacity == 1, f"the heatmap is drawn at opacity {opacity} (dimmed as stale)"


def expect_legend(page: Page) -> None:
    """The legend bar runs through the colour scale from 0 (left) to 1 (right)."""
    c = canvas_info(page, ".hw-legend-bar")
    w = c["width"]
    xy = np.stack([np.arange(w), np.full(w, c["height"] // 2)], axis=1)
    expect_pixels(page, ".hw-legend-bar", 0, xy, scale_colour(np.arange(w) / (w - 1)), "legend")


# ---- the view: title, chips, tooltips -------------------------------------------------------
def expect_view(
    page: Page, model, text: str, kind: str, layer: int, head: int, grid: np.ndarray, view: int = 0
) -> np.ndarray:
    """The view names head (layer, head), its kind and score, and draws its pattern on `text`;
    returns the expected pattern (T, T)."""
    title = page.locator(".hw-view-title").nth(view)
    expect(title).to_have_text(re.compile(rf"^L{layer}H{head} {kind} -?\d+\.\d{{3}}$"))
    score = float(title.inner_text().split()[-1])
    assert abs(score - grid[layer, head]) <= PRINTED + GRID_TOL, (score, grid[layer, head])
    pattern = head_pattern(model, text, layer, head)
    expect_heatmap(page, pattern, view)
    return pattern


def click_head(
    page: Page, layer: int, head: int, modifiers: list[str] | None = None, view: int = 0
) -> None:
    """Click the grid cell of (layer, head) in the `view`-th widget view on the page."""
    geo = grid_geometry(page, view)
    x, y = cell_point(geo, layer, head, geo["cell"] / 2, geo["cell"] / 2)
    page.locator(".hw-grid").nth(view).click(position={"x": x, "y": y}, modifiers=modifiers or [])


CLICK_ALL = """(g, cells) => { const r = g.getBoundingClientRect();
  const {cell, left, top} = g.closest('.hw-root').hooks.geometry;
  for (const [l, h] of cells) g.dispatchEvent(new MouseEvent('click', {bubbles: true,
    clientX: r.left + left + (h + 0.5) * cell, clientY: r.top + top + (l + 0.5) * cell}));
}"""


def hover_tip(page: Page, canvas: str, x: float, y: float) -> str:
    """Move the mouse to (x, y) CSS px inside `canvas` and return the tooltip shown beside it."""
    box = page.locator(canvas).first.bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    tip = page.locator(canvas).first.locator("xpath=following-sibling::div[1]")
    expect(tip).to_be_visible()
    return tip.inner_text()


def expect_grid_tooltip(page: Page, kind: str, grid: np.ndarray, layer: int, head: int) -> None:
    """Hovering a grid cell names the head, the score kind and the head's score."""
    geo = grid_geometry(page)
    text = hover_tip(
        page, ".hw-grid", *cell_point(geo, layer, head, geo["cell"] / 2, geo["cell"] / 2)
    )
    match = re.fullmatch(rf"L{layer}H{head} {kind} (-?\d+\.\d{{3}})", text)
    assert match, text
    assert abs(float(match[1]) - grid[layer, head]) <= PRINTED + GRID_TOL, text


def expect_heatmap_tooltip(page: Page, tokens: list[str], pattern: np.ndarray, q: int, k: int):
    """Hovering heatmap pixel (query q, key k) names both tokens and the attention weight."""
    T = pattern.shape[0]
    box = page.locator(".hw-heatmap").first.bounding_box()
    x, y = (k + 0.5) * box["width"] / T, (q + 0.5) * box["height"] / T
    text = hover_tip(page, ".hw-heatmap", x, y)
    prefix = f"{visible(tokens[q])} \u2192 {visible(tokens[k])}: "
    assert text.startswith(prefix), (text, prefix)
    assert abs(float(text[len(prefix) :]) - pattern[q, k]) <= PRINTED + PATTERN_TOL, text


def rgba(css: str) -> tuple[tuple[int, int, int], float]:
    """'rgb(1, 2, 3)' or 'rgba(1, 2, 3, 0.5)' -> ((1, 2, 3), alpha)."""
    parts = [float(v) for v in re.findall(r"[\d.]+", css)]
    return (int(parts[0]), int(parts[1]), int(parts[2])), parts[3] if len(parts) > 3 else 1.0


def chip_looks(page: Page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(
        selector,
        """els => els.map(e => ({text: e.textContent, title: e.title,
          background: getComputedStyle(e).backgroundColor}))""",
    )


def expect_attention_chips(
    page: Page, tokens: list[str], weights: list[float | None], pairs: list[tuple[int, int] | None]
) -> None:
    """Each view chip is tinted by its weight (alpha = weight) and its tooltip says who attends
    to whom and how much; chips with no weight (None) are plain and have no tooltip."""
    chips = chip_looks(page, ".hw-view .hw-chip")
    assert [c["text"] for c in chips] == [visible(t) for t in tokens]
    for j, (chip, w, pair) in enumerate(zip(chips, weights, pairs, strict=True)):
        colour, alpha = rgba(chip["background"])
        if w is None:
            assert chip["title"] == "" and alpha == 0, (j, chip)
            continue
        q, k = pair
        prefix = f"{visible(tokens[q])} attends to {visible(tokens[k])}: "
        assert chip["title"].startswith(prefix), (j, chip["title"], prefix)
        assert abs(float(chip["title"][len(prefix) :]) - w) <= PRINTED + PATTERN_TOL, (j, chip)
        assert colour == HOVER_RGB, (j, chip)
        assert abs(alpha - min(1.0, w)) <= PRINTED + PATTERN_TOL + ALPHA, (j, chip, w)


# ---- the ablation panel ---------------------------------------------------------------------
def shown_predictions(page: Page, side: str) -> list[tuple[str, float]]:
    """The predictions table's `side` column as (visible token, probability)."""
    rows = []
    for cell in page.locator(f".hw-pred-{side}").all_inner_texts():
        token, percent = cell.rsplit(maxsplit=1)
        rows.append((token, float(percent.rstrip("%")) / 100))
    return rows


def expect_predictions(shown: list[tuple[str, float]], want: list[tuple[str, float]], k: int):
    """`shown` is the top `k` of `want` (a longer top list), in order, each probability as
    printed. Two tokens' order or membership may differ only where their probabilities are
    within the cross-process difference (a near-tie the two processes may break differently)."""
    p = {visible(tok): prob for tok, prob in want}
    assert len(shown) == k, shown
    for tok, prob in shown:
        assert tok in p, (tok, shown, want)
        assert abs(prob - p[tok]) <= PERCENT + PROB_TOL, (tok, prob, p[tok])
    for (a, _), (b, _) in zip(shown[:-1], shown[1:], strict=True):
        assert p[a] >= p[b] - 2 * PROB_TOL, ("order", a, p[a], b, p[b])
    lowest = min(p[tok] for tok, _ in shown)
    missing = [t for t, prob in p.items() if prob > lowest + 2 * PROB_TOL and t not in dict(shown)]
    assert not missing, ("not shown", missing, shown)


TOP_K = 5  # rows of the predictions table (ablation_effect's default, which HeadWidget uses)


def expect_ablation(page: Page, model, text: str, heads: list[tuple[int, int]]) -> None:
    """The ablation panel of `heads` (in selection order) on `text`: predictions before and after,
    the mean loss line, and one chip per token tinted by its loss change with a loss tooltip."""
    names = ", ".join(f"L{layer}H{head}" for layer, head in heads)
    expect(page.locator(".hw-ablation-title")).to_have_text(f"zero-ablating {names}")
    expected = ablation_effect(model, text, heads, top_k=TOP_K + 5)
    for side, want in (("before", expected.top_before), ("after", expected.top_after)):
        expect_predictions(shown_predictions(page, side), want, TOP_K)

    loss = page.locator(".hw-loss").inner_text()
    numbers = [float(v) for v in re.findall(r"[-+]?\d+\.\d+", loss)]
    want = [expected.loss_before, expected.loss_after, expected.loss_after - expected.loss_before]
    assert len(numbers) == 3, loss
    np.testing.assert_allclose(numbers, want, rtol=0, atol=PRINTED + LOSS_TOL, err_msg=loss)

    tokens = model.to_str_tokens(text)
    chips = chip_looks(page, ".hw-loss-chips .hw-chip")
    assert [c["text"] for c in chips] == [visible(t) for t in tokens]
    assert chips[0]["title"] == "" and rgba(chips[0]["background"])[1] == 0  # never predicted
    change = expected.token_loss_change
    for j, chip in enumerate(chips[1:]):
        shown = [float(v) for v in re.fullmatch(r"loss (\S+) \u2192 (\S+)", chip["title"]).groups()]
        want = [expected.token_loss_before[j], expected.token_loss_after[j]]
        np.testing.assert_allclose(shown, want, rtol=0, atol=PRINTED + LOSS_TOL, err_msg=str(j))
        colour, alpha = rgba(chip["background"])
        if abs(change[j]) > LOSS_TOL:  # else the sign may differ between the two processes
            assert colour == (LOSS_UP if change[j] > 0 else LOSS_DOWN), (j, chip, change[j])
        want_alpha = min(1.0, abs(change[j]) / 2)
        assert abs(alpha - want_alpha) <= PRINTED + LOSS_TOL / 2 + ALPHA, (j, chip, change[j])


def stalled_for(page: Page) -> float:
    """Wait until the status line says the kernel does not answer; the seconds it reports."""
    status = page.locator(".hw-status")
    expect(status).to_have_text(re.compile(r"^no answer from the kernel for \d+ s"), timeout=30_000)
    return float(re.match(r"no answer from the kernel for (\d+) s", status.inner_text())[1])


# ---- tests ----------------------------------------------------------------------------------
# What the kernel receives, one JSON line each, in the notebook's folder: every request's changes
# (["request", {...}]) and every value the selection and the head in view take.
LOG_RECEIVED = """import json
def log(entry):
    with open("received.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\\n")
w.on_msg(lambda _, request, __: log(["request", request["args"]["changes"]]))
w.observe(lambda change: log([change["name"], change["new"]]), names=["selection", "focus"])
"""


def test_widget_in_jupyterlab(lab, browser, model, model_source, tmp_path):
    steps = ", checkpoints=timeline.bundled_checkpoints()"  # the bundled model's training steps
    widget_notebook(lab.root / "widget_lab.ipynb", model_source, extra=LOG_RECEIVED, args=steps)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    with diagnose(page, tmp_path, lab):
        open_and_run(page, lab.url("lab/tree/widget_lab.ipynb"))
        grid = score_grid(model, TEXT, "induction")
        expect_grid(page, grid)
        expect_legend(page)
        tokens = model.to_str_tokens(TEXT)
        assert page.locator(".hw-view .hw-chip").all_inner_texts() == [visible(t) for t in tokens]

        # Click the best induction head: the view names it and draws its pattern, its cell is
        # ringed, the tooltips name heads, tokens and values.
        layer, head = (int(i) for i in np.unravel_index(np.nanargmax(grid), grid.shape))
        click_head(page, layer, head)
        expected = expect_view(page, model, TEXT, "induction", layer, head, grid)
        expect_grid(page, grid, [(layer, head)], (layer, head))
        expect_grid_tooltip(page, "induction", grid, 1, 2)
        q = len(tokens) - 1  # the last token, and the earlier token it attends to most
        expect_heatmap_tooltip(page, tokens, expected, q, int(np.argmax(expected[q, :q])))

        # Hovering a token tints its sources with its row of the pattern; reverse: its column.
        T = len(tokens)
        page.locator(".hw-view .hw-chip").nth(q).hover()
        expect_attention_chips(page, tokens, list(expected[q]), [(q, j) for j in range(T)])
        expect_ablation(page, model, TEXT, [(layer, head)])

        page.locator(".hw-reverse input").check()
        k = 3
        page.locator(".hw-view .hw-chip").nth(k).hover()
        weights = [None] * k + list(expected[k:, k])
        expect_attention_chips(page, tokens, weights, [None] * k + [(j, k) for j in range(k, T)])

        # Shift-click adds a head: two tabs, both ringed, and the ablation of both.
        other = (layer, (head + 1) % model.n_heads)
        click_head(page, *other, modifiers=["Shift"])
        expect_view(page, model, TEXT, "induction", *other, grid)
        expect(page.locator(".hw-tab")).to_have_count(2)
        expect_grid(page, grid, [(layer, head), other], other)
        expect_ablation(page, model, TEXT, [(layer, head), other])

        # Clicks faster than the kernel answers are coalesced: one request is in flight at a
        # time and every change made meanwhile goes out merged into the next one. Six clicks in
        # one task: the first click goes out at once; the five other clicks leave as one request
        # when that one is answered, carrying the last click's selection and focus. Two requests:
        # the kernel never sees the four clicks in between, and the page ends on the last one.
        received = lab.root / "received.jsonl"
        before = [json.loads(line) for line in received.read_text().splitlines()]
        cells = [(i % model.n_layers, (3 * i) % model.n_heads) for i in range(6)]
        assert other not in cells and len(set(cells)) == len(cells)
        page.locator(".hw-grid").first.evaluate(CLICK_ALL, cells)
        first, last = cells[0], cells[-1]
        expect_view(page, model, TEXT, "induction", *last, grid)
        expect_ablation(page, model, TEXT, [last])
        expect_grid(page, grid, [last], last)
        got = [json.loads(line) for line in received.read_text().splitlines()][len(before) :]
        want = [
            ["request", {"selection": [list(first)], "focus": list(first)}],
            ["selection", [list(first)]],
            ["focus", list(first)],
            ["request", {"selection": [list(last)], "focus": list(last)}],
            ["selection", [list(last)]],
            ["focus", list(last)],
        ]
        assert sorted(got, key=json.dumps) == sorted(want, key=json.dumps), got

        # Another score kind, then a new text: the grid, tokens and pattern follow.
        page.select_option(".hw-kind", "previous_token")
        grid = score_grid(model, TEXT, "previous_token")
        expect_grid(page, grid, [last], last)
        expect_grid_tooltip(page, "previous_token", grid, *last)
        page.fill(".hw-text", NEW_TEXT)
        page.click(".hw-apply")
        new_grid = score_grid(model, NEW_TEXT, "previous_token")
        # the old grid must not pass for the new one
        assert np.abs(scale_colour(new_grid) - scale_colour(grid)).max() > COLOUR_TOL
        expect_grid(page, new_grid, [last], last)
        new_tokens = model.to_str_tokens(NEW_TEXT)
        expect(page.locator(".hw-view .hw-chip")).to_have_text([visible(t) for t in new_tokens])
        expect_view(page, model, NEW_TEXT, "previous_token", *last, new_grid)

        # Bad input: an error in the status line, the last good state kept, still usable.
        page.fill(".hw-text", "   ")
        page.click(".hw-apply")
        expect(page.locator(".hw-status")).to_have_text(re.compile("^error: .*empty"))
        page.wait_for_function("() => document.querySelector('.hw-text').value.trim() !== ''")
        assert page.locator(".hw-text").input_value() == NEW_TEXT
        expect_grid(page, new_grid, [last], last)
        click_head(page, 0, 0)
        expect_view(page, model, NEW_TEXT, "previous_token", 0, 0, new_grid)
        expect(page.locator(".hw-status")).to_have_text(re.compile(r"^done in"))
        expect_ablation(page, model, NEW_TEXT, [(0, 0)])

        # Alt-click a token: every head's attention from the last token to it, the library's
        # patterns at (last, key) ("which heads look here"); then back to the score.
        key, n = 2, len(new_tokens)
        page.locator(".hw-view .hw-chip").nth(key).click(modifiers=["Alt"])
        heads = [(lay, h) for lay in range(model.n_layers) for h in range(model.n_heads)]
        patterns = head_patterns(model, NEW_TEXT, heads)
        look = np.array([patterns[h][n - 1, key] for h in heads]).reshape(new_grid.shape)
        expect_grid(page, look, [(0, 0)], (0, 0))
        names = f"{visible(new_tokens[-1])} (#{n - 1}) to {visible(new_tokens[key])} (#{key})"
        expect(page.locator(".hw-legend-name")).to_have_text(f"attention from {names}")
        page.select_option(".hw-kind", "previous_token")
        expect_grid(page, new_grid, [(0, 0)], (0, 0))

        # The training-step slider: the first step's weights give grid, pattern and ablation;
        # the selection stays. One request, carrying the step alone.
        first = bundled_checkpoints()[0]
        early = load_checkpoint(model, first)
        early_grid = score_grid(early, NEW_TEXT, "previous_token")
        assert np.abs(scale_colour(early_grid) - scale_colour(new_grid)).max() > COLOUR_TOL
        count = len(received.read_text().splitlines())
        page.locator(".hw-step").focus()
        page.keyboard.press("Home")
        expect(page.locator(".hw-steps")).to_have_text(f"training step {first.step}")
        expect_grid(page, early_grid, [(0, 0)], (0, 0))
        expect_view(page, early, NEW_TEXT, "previous_token", 0, 0, early_grid)
        # (its near-uniform predictions hold several tokens shown alike, "\ufffd": the loss line)
        expect(page.locator(".hw-ablation-title")).to_have_text("zero-ablating L0H0")
        effect = ablation_effect(early, NEW_TEXT, [(0, 0)])
        loss = [
            float(v) for v in re.findall(r"[-+]?\d+\.\d+", page.locator(".hw-loss").inner_text())
        ]
        want = [effect.loss_before, effect.loss_after, effect.loss_after - effect.loss_before]
        np.testing.assert_allclose(loss, want, rtol=0, atol=PRINTED + LOSS_TOL)
        got = [json.loads(line) for line in received.read_text().splitlines()[count:]]
        assert got == [["request", {"step": first.step}]]
        page.locator(".hw-root").screenshot(path=str(tmp_path / "widget.png"))


# A busy kernel: while the file "hold" exists, the kernel stays in a callback (a user's on_select
# code) after answering a click, so the requests made meanwhile wait. (Interrupting the kernel
# would not end it: with ipykernel 7 and ipywidgets 8.1 widget messages are handled in a subshell
# thread, which SIGINT does not reach.)
HOLD_CALLBACK = """import time
from pathlib import Path
def hold(heads):
    while Path("hold").exists():
        time.sleep(0.05)
w.on_select(hold)
"""


def test_widget_says_when_the_kernel_does_not_answer(lab, browser, model, model_source, tmp_path):
    widget_notebook(lab.root / "widget_stall.ipynb", model_source, extra=HOLD_CALLBACK)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    with diagnose(page, tmp_path, lab):
        # its own workspace: the default one would reopen the other JupyterLab test's notebook
        open_and_run(page, lab.url("lab/workspaces/stall/tree/widget_stall.ipynb"))
        grid = score_grid(model, TEXT, "induction")
        expect_grid(page, grid)
        hold = lab.root / "hold"
        hold.touch()
        click_head(page, 2, 3)
        expect_view(page, model, TEXT, "induction", 2, 3, grid)
        expect(page.locator(".hw-status")).to_have_text(re.compile(r"^done in"))

        # Busy kernel: a click gets no answer, and after reply_timeout the status line says so.
        click_head(page, 0, 1)
        assert stalled_for(page) >= REPLY_TIMEOUT
        # Free again: the waiting request is answered and shown as if nothing had happened.
        hold.unlink()
        expect(page.locator(".hw-status")).to_have_text(re.compile(r"^done in"))
        expect_view(page, model, TEXT, "induction", 0, 1, grid)
        expect_ablation(page, model, TEXT, [(0, 1)])
        expect_grid(page, grid, [(0, 1)], (0, 1))

        # Shut down: the notebook says so, and a click is answered by the widget's own notice.
        shut_down_kernel(lab, "widget_stall.ipynb")
        expect(page.locator(".jp-NotebookPanel-toolbar .jp-KernelName")).to_have_text(
            re.compile("no kernel", re.IGNORECASE), timeout=30_000
        )
        click_head(page, 1, 2)
        assert stalled_for(page) >= REPLY_TIMEOUT
        assert "shut down" in page.locator(".hw-status").inner_text()


def test_widget_in_notebook7(lab, browser, model, model_source, tmp_path):
    widget_notebook(lab.root / "widget_nb7.ipynb", model_source)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    with diagnose(page, tmp_path, lab):
        open_and_run(page, lab.url("notebooks/widget_nb7.ipynb"))
        grid = score_grid(model, TEXT, "induction")
        expect_grid(page, grid)
        layer, head = model.n_layers - 1, model.n_heads - 1
        click_head(page, layer, head)
        expect_view(page, model, TEXT, "induction", layer, head, grid)
        expect_grid(page, grid, [(layer, head)], (layer, head))
        expect_ablation(page, model, TEXT, [(layer, head)])

        # The kernel restarts under the displayed widget (the REST call returns once the new
        # kernel runs, which knows nothing of the widget): a click gets no answer, and after
        # reply_timeout seconds the status line says so instead of spinning forever.
        restart_kernel(lab, "widget_nb7.ipynb")
        click_head(page, 0, 1)
        assert stalled_for(page) >= REPLY_TIMEOUT
        assert "restarted" in page.locator(".hw-status").inner_text()


def test_widget_displayed_twice(lab, browser, model, model_source, tmp_path):
    widget_notebook(lab.root / "widget_twice.ipynb", model_source, views=2)
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    with diagnose(page, tmp_path, lab):
        open_and_run(page, lab.url("notebooks/widget_twice.ipynb"))
        grid = score_grid(model, TEXT, "induction")
        for view in (0, 1):
            expect_grid(page, grid, view=view)
        # A click in either view selects the head in both; the later click wins in both.
        for clicked, (layer, head) in ((0, (1, 2)), (1, (0, model.n_heads - 1))):
            click_head(page, layer, head, view=clicked)
            for view in (0, 1):
                expect_view(page, model, TEXT, "induction", layer, head, grid, view=view)
                expect_grid(page, grid, [(layer, head)], (layer, head), view=view)


def test_widget_on_a_nodelay_server(browser, model, model_source, tmp_path):
    """The server option the tour uses (`mlx_headwidget.server.SETTING`): the widget works on it."""
    (tmp_path / "lab").mkdir()
    with running_lab(tmp_path / "lab", nodelay=True) as fast:
        widget_notebook(fast.root / "widget_nodelay.ipynb", model_source)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        with diagnose(page, tmp_path / "page", fast):
            open_and_run(page, fast.url("lab/tree/widget_nodelay.ipynb"))
            grid = score_grid(model, TEXT, "induction")
            expect_grid(page, grid)
            for layer, head in ((0, 1), (model.n_layers - 1, 2)):
                click_head(page, layer, head)
                expect_view(page, model, TEXT, "induction", layer, head, grid)
                expect_ablation(page, model, TEXT, [(layer, head)])
        assert "Traceback" not in fast.log.read_text()


MARIMO_APP = """import marimo

app = marimo.App()


@app.cell
def _():
    import marimo as mo

    from mlx_headwidget import HeadWidget, InterpretableModel

    model = InterpretableModel({source!r})
    w = mo.ui.anywidget(HeadWidget(model, text={text!r}, reply_timeout={timeout!r}))
    w
    return


if __name__ == "__main__":
    app.run()
"""
# The look the widget's CSS gives its "Run on this text" button, whatever the host's CSS resets.
BUTTON_LOOK = """b => { const s = getComputedStyle(b); const bg = s.backgroundColor;
  return {border: [s.borderTopWidth, s.borderTopStyle], padding: s.paddingLeft,
    radius: s.borderTopLeftRadius, cursor: s.cursor,
    background: bg !== 'rgba(0, 0, 0, 0)' && bg !== 'transparent'}; }"""


def test_widget_in_marimo(browser, model, model_source, tmp_path):
    """`mo.ui.anywidget(HeadWidget(...))` in an app served by `marimo run`: the same widget."""
    app = tmp_path / "app.py"
    app.write_text(MARIMO_APP.format(source=model_source, text=TEXT, timeout=REPLY_TIMEOUT))
    with running_marimo(app) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        with diagnose(page, tmp_path / "page", Lab(0, "", tmp_path, tmp_path / "server.log")):
            page.goto(url)
            grid = score_grid(model, TEXT, "induction")
            expect_grid(page, grid)
            expect_legend(page)
            look = page.locator(".hw-apply").evaluate(BUTTON_LOOK)
            want = {"border": ["1px", "solid"], "padding": "10px", "radius": "3px"}
            assert look == {**want, "cursor": "pointer", "background": True}, look
            tokens = model.to_str_tokens(TEXT)
            assert page.locator(".hw-view .hw-chip").all_inner_texts() == [
                visible(t) for t in tokens
            ]
            layer, head = (int(i) for i in np.unravel_index(np.nanargmax(grid), grid.shape))
            click_head(page, layer, head)
            expect_view(page, model, TEXT, "induction", layer, head, grid)
            expect_grid(page, grid, [(layer, head)], (layer, head))
            expect_ablation(page, model, TEXT, [(layer, head)])
            other = (layer, (head + 1) % model.n_heads)
            click_head(page, *other, modifiers=["Shift"])
            expect_view(page, model, TEXT, "induction", *other, grid)
            expect_ablation(page, model, TEXT, [(layer, head), other])
            expect(page.locator(".hw-status")).to_have_text(re.compile(r"^done in"))


def test_the_screenshot_script_draws_the_clicked_widget(tmp_path):
    """docs/make_screenshot.py (README's picture) works; here it writes under tmp_path."""
    out = tmp_path / "widget.png"
    script = Path(__file__).resolve().parents[2] / "docs" / "make_screenshot.py"
    run = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    with Image.open(out) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert rgb.shape[0] > 300 and rgb.shape[1] > 600, rgb.shape
    # the clicked head's cell is ringed: a 2-px square ring, at least 40 px of it in the picture
    assert (rgb == FOCUS_RING).all(axis=-1).sum() >= 40
