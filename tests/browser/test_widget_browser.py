"""HeadWidget end to end: a real JupyterLab (and Notebook 7) server, Debian's chromium, the model.

The notebook runs `HeadWidget` in its own kernel; this process loads the same model and computes
the expected values with the library, so every check compares what the browser drew with an
independent computation: grid scores, the clicked head's pattern, the hovered token's row, the
ablation predictions, the grid after a text edit, and an error for bad input.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from harness import (
    REPO,
    Lab,
    diagnose,
    launched_browser,
    open_and_run,
    restart_kernel,
    running_lab,
    write_notebook,
)
from playwright.sync_api import Browser, Page

from mlx_headwidget import InterpretableModel
from mlx_headwidget.analysis import ablation_effect, head_pattern, score_grid

TEXT = "The cat sat on the mat. The cat sat on the mat."
NEW_TEXT = "Return the number of items in a list. Return the number of items in a list."
SCREENSHOT = REPO / "docs" / "widget.png"


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


def widget_notebook(path: Path, source: str | None, views: int = 1) -> Path:
    """A notebook whose one cell shows a HeadWidget on TEXT, displayed `views` times."""
    return write_notebook(
        path,
        [
            "from mlx_headwidget import InterpretableModel\n"
            "from mlx_headwidget.widget import HeadWidget\n"
            f"model = InterpretableModel({source!r})\n"
            f"w = HeadWidget(model, text={TEXT!r}, reply_timeout=2.0)\n"
            + "display(w)\n" * (views - 1)
            + "w"
        ],
    )


# ---- reading what the page drew -------------------------------------------------------------
def drawn_grid(page: Page) -> dict | None:
    return page.evaluate(
        """() => { const g = document.querySelector('.hw-grid')?.drawnGrid;
          return g ? {kind: g.kind, text: g.text, shape: g.shape, values: Array.from(g.values)}
                   : null; }"""
    )


def drawn_pattern(page: Page) -> np.ndarray:
    p = page.evaluate(
        """() => { const p = document.querySelector('.hw-heatmap').drawnPattern;
          return {shape: p.shape, values: Array.from(p.values)}; }"""
    )
    return np.array(p["values"], dtype=np.float64).reshape(p["shape"])


def wait_grid(page: Page, kind: str, text: str | None) -> np.ndarray:
    page.wait_for_function(
        """([kind, text]) => { const g = document.querySelector('.hw-grid')?.drawnGrid;
          return g && g.kind === kind && (text === null || g.text === text); }""",
        arg=[kind, text],
    )
    g = drawn_grid(page)
    values = np.array([np.nan if v is None else v for v in g["values"]], dtype=np.float64)
    return values.reshape(g["shape"])


def click_head(
    page: Page, layer: int, head: int, modifiers: list[str] | None = None, view: int = 0
) -> None:
    """Click the grid cell of (layer, head) in the `view`-th widget view on the page."""
    canvas = page.locator(".hw-grid").nth(view)
    geo = canvas.evaluate(
        "c => ({cell: +c.dataset.cell, left: +c.dataset.left, top: +c.dataset.top})"
    )
    x = geo["left"] + (head + 0.5) * geo["cell"]
    y = geo["top"] + (layer + 0.5) * geo["cell"]
    canvas.click(position={"x": x, "y": y}, modifiers=modifiers or [])


CLICK_ALL = """cells => { const g = document.querySelector('.hw-grid');
  const r = g.getBoundingClientRect(); const c = +g.dataset.cell;
  for (const [l, h] of cells) g.dispatchEvent(new MouseEvent('click', {bubbles: true,
    clientX: r.left + +g.dataset.left + (h + 0.5) * c,
    clientY: r.top + +g.dataset.top + (l + 0.5) * c}));
}"""


def wait_pattern(page: Page, layer: int, head: int, text: str) -> np.ndarray:
    page.wait_for_function(
        """([l, h, text]) => { const p = document.querySelector('.hw-heatmap')?.drawnPattern;
          return p && p.layer === l && p.head === h && p.text === text; }""",
        arg=[layer, head, text],
    )
    return drawn_pattern(page)


def chip_weights(page: Page) -> list[float | None]:
    return page.eval_on_selector_all(
        ".hw-view .hw-chip", "els => els.map(e => e.dataset.weight ? +e.dataset.weight : null)"
    )


def predictions(page: Page, side: str) -> list[tuple[str, float]]:
    rows = page.eval_on_selector_all(
        f".hw-pred-{side}", "els => els.map(e => [e.dataset.token, +e.dataset.prob])"
    )
    return [(tok, prob) for tok, prob in rows]


def check_predictions(page: Page, model, text: str, heads: list[tuple[int, int]]) -> None:
    key = ",".join(sorted(f"L{layer}H{head}" for layer, head in heads))
    page.wait_for_selector(f'.hw-ablation[data-heads="{key}"]')
    expected = ablation_effect(model, text, heads)
    for side, want in (("before", expected.top_before), ("after", expected.top_after)):
        got = predictions(page, side)
        assert [tok for tok, _ in got] == [tok for tok, _ in want], side
        np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=1e-5)


# ---- tests ----------------------------------------------------------------------------------
def test_widget_in_jupyterlab(lab, browser, model, model_source, tmp_path):
    widget_notebook(lab.root / "widget_lab.ipynb", model_source)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    with diagnose(page, tmp_path, lab):
        open_and_run(page, lab.url("lab/tree/widget_lab.ipynb"))
        grid = wait_grid(page, "induction", None)
        np.testing.assert_allclose(grid, score_grid(model, TEXT, "induction"), atol=1e-6)
        tokens = model.to_str_tokens(TEXT)
        assert page.locator(".hw-view .hw-chip").count() == len(tokens)

        # Click the best induction head: the view names it and draws its pattern.
        layer, head = (int(i) for i in np.unravel_index(np.nanargmax(grid), grid.shape))
        click_head(page, layer, head)
        drawn = wait_pattern(page, layer, head, TEXT)
        title = page.locator(".hw-view-title")
        assert title.get_attribute("data-head") == f"L{layer}H{head}"
        assert title.inner_text().startswith(f"L{layer}H{head} induction")
        expected = head_pattern(model, TEXT, layer, head)
        np.testing.assert_allclose(drawn, expected, atol=1e-3)

        # Hovering a token colours its sources with its row of the pattern; reverse: its column.
        q = len(tokens) - 1
        page.locator(".hw-view .hw-chip").nth(q).hover()
        weights = chip_weights(page)
        assert weights[q] is not None
        np.testing.assert_allclose(weights, expected[q], atol=1e-3)
        check_predictions(page, model, TEXT, [(layer, head)])
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.locator(".hw-root").screenshot(path=str(SCREENSHOT))

        page.locator(".hw-reverse input").check()
        k = 3
        page.locator(".hw-view .hw-chip").nth(k).hover()
        weights = chip_weights(page)
        assert all(w is None for w in weights[:k])
        np.testing.assert_allclose(weights[k:], expected[k:, k], atol=1e-3)

        # Shift-click adds a head: two tabs, and the ablation of both.
        other = (layer, (head + 1) % model.n_heads)
        click_head(page, *other, modifiers=["Shift"])
        wait_pattern(page, *other, TEXT)
        assert page.locator(".hw-tab").count() == 2
        check_predictions(page, model, TEXT, [(layer, head), other])

        # Clicks faster than the kernel answers are coalesced; only the last one is drawn.
        cells = [(i % model.n_layers, (3 * i) % model.n_heads) for i in range(6)]
        first = int(page.locator(".hw-root").get_attribute("data-request"))
        page.evaluate(CLICK_ALL, cells)
        last = cells[-1]
        wait_pattern(page, *last, TEXT)
        check_predictions(page, model, TEXT, [last])
        assert page.locator(".hw-view-title").get_attribute("data-head") == "L{}H{}".format(*last)
        assert int(page.locator(".hw-root").get_attribute("data-request")) - first < 2 * len(cells)

        # Another score kind, then a new text: the grid, tokens and pattern follow.
        page.select_option(".hw-kind", "previous_token")
        grid = wait_grid(page, "previous_token", TEXT)
        np.testing.assert_allclose(grid, score_grid(model, TEXT, "previous_token"), atol=1e-6)
        page.fill(".hw-text", NEW_TEXT)
        page.click(".hw-apply")
        grid = wait_grid(page, "previous_token", NEW_TEXT)
        np.testing.assert_allclose(grid, score_grid(model, NEW_TEXT, "previous_token"), atol=1e-6)
        assert page.locator(".hw-view .hw-chip").count() == len(model.to_str_tokens(NEW_TEXT))
        drawn = wait_pattern(page, *last, NEW_TEXT)
        np.testing.assert_allclose(drawn, head_pattern(model, NEW_TEXT, *last), atol=1e-3)

        # Bad input: an error in the status line, the last good state kept, still usable.
        page.fill(".hw-text", "   ")
        page.click(".hw-apply")
        page.wait_for_selector(".hw-status.hw-error")
        assert "empty" in page.locator(".hw-status").inner_text()
        assert drawn_grid(page)["text"] == NEW_TEXT
        page.wait_for_function("() => document.querySelector('.hw-text').value.trim() !== ''")
        assert page.locator(".hw-text").input_value() == NEW_TEXT
        click_head(page, 0, 0)
        wait_pattern(page, 0, 0, NEW_TEXT)
        page.wait_for_selector(".hw-status:not(.hw-error)")
        check_predictions(page, model, NEW_TEXT, [(0, 0)])


def test_widget_in_notebook7(lab, browser, model, model_source, tmp_path):
    widget_notebook(lab.root / "widget_nb7.ipynb", model_source)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    with diagnose(page, tmp_path, lab):
        open_and_run(page, lab.url("notebooks/widget_nb7.ipynb"))
        grid = wait_grid(page, "induction", None)
        np.testing.assert_allclose(grid, score_grid(model, TEXT, "induction"), atol=1e-6)
        layer, head = model.n_layers - 1, model.n_heads - 1
        click_head(page, layer, head)
        drawn = wait_pattern(page, layer, head, TEXT)
        assert page.locator(".hw-view-title").get_attribute("data-head") == f"L{layer}H{head}"
        np.testing.assert_allclose(drawn, head_pattern(model, TEXT, layer, head), atol=1e-3)
        check_predictions(page, model, TEXT, [(layer, head)])

        # The kernel restarts under the displayed widget: a click gets no answer, and after
        # reply_timeout seconds (2 here) the status line says so instead of spinning forever.
        restart_kernel(lab, "widget_nb7.ipynb")
        time.sleep(3)
        click_head(page, 0, 1)
        page.wait_for_selector(".hw-root[data-state='stalled']", timeout=30_000)
        assert "restarted" in page.locator(".hw-status").inner_text()


BOTH_VIEWS_SHOW = """([l, h]) => {
  const drawn = [...document.querySelectorAll('.hw-heatmap')].map((c) => c.drawnPattern);
  return drawn.length === 2 && drawn.every((p) => p && p.layer === l && p.head === h);
}"""


def test_widget_displayed_twice(lab, browser, model, model_source, tmp_path):
    widget_notebook(lab.root / "widget_twice.ipynb", model_source, views=2)
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    with diagnose(page, tmp_path, lab):
        open_and_run(page, lab.url("notebooks/widget_twice.ipynb"))
        page.wait_for_function(
            "() => [...document.querySelectorAll('.hw-grid')].filter(g => g.drawnGrid).length === 2"
        )
        # A click in either view selects the head in both; the later click wins in both.
        for view, (layer, head) in ((0, (1, 2)), (1, (0, model.n_heads - 1))):
            click_head(page, layer, head, view=view)
            page.wait_for_function(BOTH_VIEWS_SHOW, arg=[layer, head])
            titles = page.locator(".hw-view-title")
            assert [titles.nth(i).get_attribute("data-head") for i in (0, 1)] == [
                f"L{layer}H{head}"
            ] * 2


def test_widget_on_a_nodelay_server(browser, model, model_source, tmp_path):
    """The server option the tour uses (`mlx_headwidget.server.SETTING`): the widget works on it."""
    (tmp_path / "lab").mkdir()
    with running_lab(tmp_path / "lab", nodelay=True) as fast:
        widget_notebook(fast.root / "widget_nodelay.ipynb", model_source)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        with diagnose(page, tmp_path / "page", fast):
            open_and_run(page, fast.url("lab/tree/widget_nodelay.ipynb"))
            wait_grid(page, "induction", None)
            for layer, head in ((0, 1), (model.n_layers - 1, 2)):
                click_head(page, layer, head)
                drawn = wait_pattern(page, layer, head, TEXT)
                want = head_pattern(model, TEXT, layer, head)
                np.testing.assert_allclose(drawn, want, atol=1e-3)
                check_predictions(page, model, TEXT, [(layer, head)])
        assert "Traceback" not in fast.log.read_text()
