"""nbval plugin: compare the notebooks' plotly figures up to float rounding, the rest exactly.

Loaded with `-p nbval_plotly` (pyproject's pytest addopts, with notebooks/ on `pythonpath`), not as
a conftest.py: tests/ has its own conftest module, which a second one would shadow. It also makes
notebooks/sanitize.cfg nbval's sanitize file unless `--nbval-sanitize-with` names another, so the
run does not depend on the working directory.

A figure's numbers (attention weights, scores, losses) change in their last bits with the BLAS
library and the MLX build, e.g. with and without OpenBLAS preloaded on Linux, while every digit a
reader can see stays the same. So a stored figure and a re-run one count as equal when their JSON
has the same structure, the same strings, and numbers that agree within RTOL/ATOL (typed arrays,
{"dtype", "bdata"[, "shape"]}, are decoded first). Text outputs are still compared exactly, after
the regexes of sanitize.cfg.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nbval.plugin import IPyNbCell

PLOTLY = "application/vnd.plotly.v1+json"
SANITIZE = Path(__file__).with_name("sanitize.cfg")
RTOL, ATOL = 1e-4, 1e-5


def _typed_array(value: Any) -> np.ndarray | None:
    """The array of a plotly typed-array spec, or None if `value` is not one."""
    keys = set(value) if isinstance(value, dict) else set()
    if not {"dtype", "bdata"} <= keys <= {"dtype", "bdata", "shape"}:
        return None
    array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    shape = value.get("shape")
    if shape is not None:
        dims = [int(d) for d in str(shape).split(",")] if isinstance(shape, str) else list(shape)
        array = array.reshape(dims)
    return array


def close(a: Any, b: Any) -> bool:
    """Equal JSON structure and strings; numbers and typed arrays equal within RTOL/ATOL."""
    arrays = _typed_array(a), _typed_array(b)
    if arrays[0] is not None or arrays[1] is not None:
        x, y = (
            np.asarray(v if arr is None else arr) for v, arr in zip((a, b), arrays, strict=True)
        )
        if x.shape != y.shape or x.dtype.kind != y.dtype.kind:
            return False
        if x.dtype.kind in "fc":
            return bool(np.allclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True))
        return bool(np.array_equal(x, y))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if _number(a) and _number(b):
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_compare_outputs = IPyNbCell.compare_outputs


def compare_outputs(self, test, ref, skip_compare=None):
    """nbval's comparison, after a re-run figure close to its stored one is replaced by it."""
    stored = [o for o in ref if PLOTLY in o.get("data", {})]
    rerun = [o for o in test if PLOTLY in o.get("data", {})]
    for old, new in zip(stored, rerun, strict=False):  # a missing figure: nbval says so
        if close(new["data"][PLOTLY], old["data"][PLOTLY]):
            new["data"][PLOTLY] = old["data"][PLOTLY]
    return _compare_outputs(self, test, ref, skip_compare)


IPyNbCell.compare_outputs = compare_outputs


@pytest.hookimpl(trylast=True)  # after nbval has mapped its deprecated --sanitize-with
def pytest_configure(config) -> None:
    """Default nbval's sanitize file to the one beside this plugin."""
    if getattr(config.option, "nbval_sanitize_with", None) is None:
        config.option.nbval_sanitize_with = str(SANITIZE)
