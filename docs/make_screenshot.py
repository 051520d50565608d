"""Regenerate README's screenshot, docs/widget.png: HeadWidget in a real JupyterLab and chromium,
the best induction head clicked and the last token hovered.

Usage: LD_PRELOAD=<OpenBLAS> python docs/make_screenshot.py [OUT] [--model SOURCE]
`make screenshot` takes it on SmolLM2-135M (`--model smollm2-135m`); without --model, on the bundled
model. Needs the test extras and Debian's chromium (`make install-test`). OUT defaults to
docs/widget.png.
"""

from __future__ import annotations

import argparse
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


def screenshot(out: Path, model: str | None = None) -> Path:
    """Write the screenshot of the widget on InterpretableModel(model) to `out` (PNG); return it."""
    cell = (
        "from mlx_headwidget import HeadWidget, InterpretableModel\n"
        f"HeadWidget(InterpretableModel({model!r}), text={TEXT!r})"
    )
    grid = score_grid(InterpretableModel(model), TEXT, "induction")
    layer, head = (int(i) for i in np.unravel_index(np.nanargmax(grid), grid.shape))
    with tempfile.TemporaryDirectory() as tmp, running_lab(Path(tmp)) as lab:
        write_notebook(lab.root / "widget.ipynb", [cell])
        with launched_browser() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1700})
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "docs" / "widget.png")
    parser.add_argument(
        "--model", default=None, help="InterpretableModel source (default: bundled)"
    )
    args = parser.parse_args()
    print(f"wrote {screenshot(args.out, args.model)}")
