"""The notebooks' comparison plugin (notebooks/nbval_plotly.py): rounding passes, changes fail.

Unit checks of `close`, `same_text` and `number_drift`, then one end-to-end run of nbval with the
plugin on a small notebook whose stored outputs are edited: a last printed digit one unit off
passes, two units off fails, a figure number off by 1e-3 fails.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from nbval_plotly import ATOL, PLOTLY, RTOL, close, number_drift, same_text

REPO = Path(__file__).resolve().parents[1]


def typed(a: np.ndarray) -> dict:
    """A plotly typed-array spec of `a`."""
    spec = {"dtype": a.dtype.str.lstrip("<"), "bdata": base64.b64encode(a.tobytes()).decode()}
    if a.ndim > 1:
        spec["shape"] = ",".join(map(str, a.shape))
    return spec


FIGURE = {
    "data": [
        {
            "type": "heatmap",
            "z": typed(np.array([[0.25, 0.5], [0.125, 0.75]])),
            "hovertext": [["L0H0 induction 0.250", "L0H1 induction 0.500"]],
            "x": [0, 1],
            "zmax": 0.75,
        }
    ],
    "layout": {"title": {"text": "scores"}},
}


def edited(path: tuple, value) -> dict:
    """A copy of FIGURE with the item at `path` replaced by `value`."""
    figure = json.loads(json.dumps(FIGURE))
    node = figure
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return figure


def test_figures_equal_up_to_float_rounding():
    assert close(FIGURE, json.loads(json.dumps(FIGURE)))
    rounding = np.array([[0.25, 0.5], [0.125, 0.75]]) * (1 + 5e-5)
    assert close(edited(("data", 0, "z"), typed(rounding)), FIGURE)
    assert close(edited(("data", 0, "zmax"), 0.75 + 1e-5), FIGURE)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("data", 0, "z"), typed(np.array([[0.25, 0.5], [0.125, 0.751]]))),  # off by 1e-3
        (("data", 0, "zmax"), 0.751),  # a plain number off by 1e-3
        (("data", 0, "z"), typed(np.array([0.25, 0.5, 0.125, 0.75]))),  # reshaped
        (("data", 0, "x"), [0, 2]),  # an integer changed
        (("data", 0, "x"), [0, 1, 2]),  # a list longer
        (("data", 0, "type"), "bar"),  # a string changed
        (("layout", "title", "text"), "Scores"),
        (("data", 0, "hovertext"), [["L0H0 induction 0.250", "L0H2 induction 0.500"]]),
        (("data", 0, "hovertext"), [["L0H0 induction 0.252", "L0H1 induction 0.500"]]),
    ],
)
def test_figures_that_changed_are_not_close(path, value):
    changed = edited(path, value)
    assert not close(changed, FIGURE)
    assert not close(FIGURE, changed)


def test_a_missing_key_is_not_close():
    fewer = json.loads(json.dumps(FIGURE))
    del fewer["data"][0]["zmax"]
    assert not close(fewer, FIGURE) and not close(FIGURE, fewer)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("score 0.024", "score 0.023"),
        ("0.99 and 1.00", "1.00 and 0.99"),
        ("loss 7.88 -> 10.50", "loss 7.89 -> 10.49"),
        ("-0.000", "0.000"),
        ("p = 1.25e-05", "p = 1.26e-05"),
    ],
)
def test_printed_numbers_may_move_one_unit_of_their_last_digit(a, b):
    assert same_text(a, b) and same_text(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("score 0.024", "score 0.022"),  # two units
        ("12 heads", "13 heads"),  # integers are exact
        ("L2H3", "L2H2"),
        ("0.02", "0.020"),  # printed to another precision
        ("score 0.024", "score: 0.024"),  # the text between numbers changed
        ("p = 1.25e-05", "p = 1.25e-06"),
        ("0.5 0.5", "0.5"),
    ],
)
def test_printed_numbers_that_changed_are_not_the_same_text(a, b):
    assert not same_text(a, b) and not same_text(b, a)


def test_number_drift_measures_what_close_allows():
    rounding = np.array([[0.25, 0.5], [0.125, 0.75]]) + 2e-5
    biggest, share, digits = number_drift(edited(("data", 0, "z"), typed(rounding)), FIGURE)
    assert biggest == pytest.approx(2e-5, rel=1e-6)
    assert share == pytest.approx(2e-5 / (ATOL + RTOL * 0.125), rel=1e-6)
    assert digits == 0
    hover = [["L0H0 induction 0.251", "L0H1 induction 0.500"]]
    assert number_drift(edited(("data", 0, "hovertext"), hover), FIGURE)[2] == pytest.approx(1)
    assert number_drift(edited(("data", 0, "type"), "bar"), FIGURE) == (np.inf,) * 3


# ---- nbval with the plugin, end to end ----------------------------------------------------------
SOURCE = f"""from IPython.display import display
print(f"score {{0.0235 + 1e-9:.3f}}, 12 heads")
figure = {{"data": [{{"type": "bar", "x": [0, 1], "y": [0.25, 0.75]}}], "layout": {{}}}}
display({{{PLOTLY!r}: figure}}, raw=True)"""


def stored_notebook(path: Path, printed: str, y: list[float]) -> Path:
    """A one-cell notebook running SOURCE, with the given outputs stored as its outputs."""
    cell = new_code_cell(SOURCE, execution_count=1)
    figure = {"data": [{"type": "bar", "x": [0, 1], "y": y}], "layout": {}}
    cell.outputs = [
        new_output("stream", name="stdout", text=printed + "\n"),
        new_output("display_data", data={PLOTLY: figure}),
    ]
    nb = new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def test_nbval_passes_rounding_and_fails_changes(tmp_path):
    """The cell prints "score 0.024, 12 heads" and shows a figure; stored outputs are edited."""
    cases = {
        "same": ("score 0.024, 12 heads", [0.25, 0.75], True),
        "rounding": ("score 0.023, 12 heads", [0.25, 0.75 + 2e-5], True),
        "two_digits": ("score 0.022, 12 heads", [0.25, 0.75], False),
        "count": ("score 0.024, 13 heads", [0.25, 0.75], False),
        "figure": ("score 0.024, 12 heads", [0.25, 0.751], False),
    }
    paths = {n: stored_notebook(tmp_path / f"{n}.ipynb", p, y) for n, (p, y, _) in cases.items()}
    # in tmp_path, with the plugin and the nbval options of the project's pytest configuration
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "nbval_plotly", "--nbval"]
        + ["--nbval-current-env", "-rA", *(p.name for p in paths.values())],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO / "notebooks")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    for name, (_, _, passes) in cases.items():
        word = "PASSED" if passes else "FAILED"
        assert f"{word} {paths[name].name}::Cell 0" in proc.stdout, (name, proc.stdout[-4000:])
