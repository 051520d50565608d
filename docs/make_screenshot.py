"""Regenerate README's screenshot, docs/widget.png: HeadWidget on the bundled model in a real
JupyterLab and chromium, the best induction head clicked and the last token hovered.

Usage: LD_PRELOAD=<OpenBLAS> python docs/make_screenshot.py [OUT]   (or `make screenshot`)
Needs the test extras and Debian's chromium (`make install-test`). OUT defaults to docs/widget.png.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "browser")]

from harness import launched_browser, open_and_run, running_lab, write_notebook  # noqa: E402
from playwright.sync_api import expect  # noqa: E402

from mlx_headwidget import InterpretableModel  # noqa: E402
from mlx_headwidget.analysis import score_grid  # noqa: E402

expect.set_options(timeout=60_000)  # a loaded machine; Playwright's default for expect is 5 s
TEXT = "The cat sat on the mat. The cat sat on the mat."
CELL = (
    "from mlx_headwidget import InterpretableModel\n"
    "from mlx_headwidget.widget import HeadWidget\n"
    f"HeadWidget(InterpretableModel(), text={TEXT!r})"
)


def screenshot(out: Path) -> Path:
    """Write the screenshot to `out` (PNG) and return it."""
    grid = score_grid(InterpretableModel(), TEXT, "induction")
    layer, head = (int(i) for i in np.unravel_index(np.nanargmax(grid), grid.shape))
    with tempfile.TemporaryDirectory() as tmp, running_lab(Path(tmp)) as lab:
        write_notebook(lab.root / "widget.ipynb", [CELL])
        with launched_browser() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            open_and_run(page, lab.url("lab/tree/widget.ipynb"))
            scored = re.compile(r"^\d+ layers \u00d7 \d+ heads$")  # not "(computing)"
            expect(page.locator(".hw-grid-panel .hw-title")).to_have_text(scored)
            canvas = page.locator(".hw-grid")
            cell, left, top = page.locator(".hw-root").evaluate(
                "r => [r.hooks.geometry.cell, r.hooks.geometry.left, r.hooks.geometry.top]"
            )
            canvas.click(
                position={"x": left + (head + 0.5) * cell, "y": top + (layer + 0.5) * cell}
            )
            name = f"L{layer}H{head}"
            expect(page.locator(".hw-view-title")).to_have_text(re.compile(rf"^{name} \S+ [\d.]+$"))
            expect(page.locator(".hw-ablation-title")).to_have_text(f"zero-ablating {name}")
            page.locator(".hw-view .hw-chip").last.hover()
            out.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".hw-root").screenshot(path=str(out))
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "widget.png"
    print(f"wrote {screenshot(target)}")
