"""nbval plugin: compare the notebooks' outputs up to float rounding, everything else exactly.

Loaded with `-p nbval_plotly` (pyproject's pytest addopts, with notebooks/ on `pythonpath`), not as
a conftest.py: tests/ has its own conftest module, which a second one would shadow. It also makes
notebooks/sanitize.cfg nbval's sanitize file unless `--nbval-sanitize-with` names another, so the
run does not depend on the working directory.

The numbers the notebooks compute (attention weights, scores, losses) change in their last bits
with the BLAS library, the CPU's kernels and the MLX build (with and without OpenBLAS preloaded on
Linux, Accelerate or Metal on a Mac), while every digit a reader can see stays the same, except
where a value lies within that change of a rounding boundary. So a stored output and a re-run one
count as equal when:
- plotly figures: the JSON has the same structure and the same strings, and numbers (typed arrays,
  {"dtype", "bdata"[, "shape"]}, decoded first) agree within RTOL/ATOL;
- text (stdout, text/plain, and strings inside figures): the same text between its numbers, the
  same integers, and numbers printed with decimals that differ by at most one unit of their last
  printed digit ("0.024" and "0.023", never "0.024" and "0.022", "12" and "13", "0.02" and "0.020").
Text is compared after the regexes of sanitize.cfg, as nbval does.
"""

from __future__ import annotations

import base64
import math
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from nbval.plugin import IPyNbCell

PLOTLY = "application/vnd.plotly.v1+json"
SANITIZE = Path(__file__).with_name("sanitize.cfg")
# `python bench/float_error.py --notebooks` re-runs the notebooks under OpenBLAS (with this CPU's
# kernels and Haswell's, SkylakeX's, Sandybridge's) and MLX's bundled BLAS: figure numbers moved by
# up to 9.3e-5, relatively up to 5.5e-5 (a per-token loss of 0.76 by 4.2e-5, OpenBLAS Haswell).
# The allowance is about 6x that; a change a reader could see (1e-3 on a score) still fails.
RTOL, ATOL = 3e-4, 3e-5
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


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


def _last_digit(number: str) -> Decimal | None:
    """One unit of the last printed digit of a number with decimals ("0.024" -> 0.001), or None
    for an integer ("12", "3e5"), which must match exactly."""
    mantissa, _, exponent = number.lower().partition("e")
    if "." not in mantissa:
        return None
    decimals = len(mantissa) - mantissa.index(".") - 1
    return Decimal(1).scaleb(-decimals + int(exponent or 0))


def same_text(a: str, b: str) -> bool:
    """Equal text between the numbers, equal integers, and numbers printed with decimals that
    differ by at most one unit of their last digit, printed to the same number of digits."""
    if a == b:
        return True
    if NUMBER.split(a) != NUMBER.split(b):
        return False
    for x, y in zip(NUMBER.findall(a), NUMBER.findall(b), strict=True):
        unit = _last_digit(x)
        if unit is None or unit != _last_digit(y):
            if x != y:
                return False
        elif abs(Decimal(x) - Decimal(y)) > unit:
            return False
    return True


def close(a: Any, b: Any) -> bool:
    """Equal JSON structure; numbers and typed arrays within RTOL/ATOL; strings `same_text`."""
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
    if isinstance(a, str) and isinstance(b, str):
        return same_text(a, b)
    return type(a) is type(b) and a == b


def number_drift(a: Any, b: Any) -> tuple[float, float, float]:
    """How far a re-run output `a` is from the stored `b`: the largest |a - b| of JSON numbers and
    typed-array values, the largest share of the allowance, |a - b| / (ATOL + RTOL |b|), used
    by one of them (`close` needs <= 1), and the largest difference of numbers printed in
    strings, in units of their last digit (`same_text` needs <= 1). inf where the structure,
    the text between numbers or an integer differs."""
    inf = (math.inf, math.inf, math.inf)
    arrays = _typed_array(a), _typed_array(b)
    if arrays[0] is not None or arrays[1] is not None:
        x, y = (
            np.asarray(v if arr is None else arr) for v, arr in zip((a, b), arrays, strict=True)
        )
        if x.shape != y.shape or x.dtype.kind != y.dtype.kind:
            return inf
        if x.dtype.kind in "fc":
            diff = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
            if not diff.size:
                return 0.0, 0.0, 0.0
            return float(diff.max()), float((diff / (ATOL + RTOL * np.abs(y))).max()), 0.0
        a, b = x.ravel().tolist(), y.ravel().tolist()
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return inf
        a, b = [a[k] for k in a], [b[k] for k in a]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return inf
        drifts = [number_drift(x, y) for x, y in zip(a, b, strict=True)]
        return tuple(max((d[i] for d in drifts), default=0.0) for i in range(3))
    if _number(a) and _number(b):
        if math.isnan(a) and math.isnan(b):
            return 0.0, 0.0, 0.0
        return abs(a - b), abs(a - b) / (ATOL + RTOL * abs(b)), 0.0
    if isinstance(a, str) and isinstance(b, str):
        if NUMBER.split(a) != NUMBER.split(b):
            return inf
        worst = 0.0
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b), strict=True):
            unit = _last_digit(x)
            if x == y:
                continue
            if unit is None or unit != _last_digit(y):
                return inf
            worst = max(worst, float(abs(Decimal(x) - Decimal(y)) / unit))
        return 0.0, 0.0, worst
    return (0.0, 0.0, 0.0) if type(a) is type(b) and a == b else inf


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge_streams(outputs: list) -> list:
    """Consecutive stream outputs of one name joined into one (a kernel may split a print)."""
    merged: list = []
    for out in outputs:
        last = merged[-1] if merged else None
        if (
            out.get("output_type") == "stream"
            and last is not None
            and last.get("output_type") == "stream"
            and last.get("name") == out.get("name")
        ):
            last["text"] = last["text"] + out["text"]
        else:
            merged.append(nbformat.from_dict(dict(out)))
    return merged


def _text(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    return value if isinstance(value, str) else None


def _sanitized(cell: IPyNbCell, value: Any) -> Any:
    text = _text(value)
    return cell.sanitize(text) if text is not None else value


def accept_rounding(cell: IPyNbCell, test: list, ref: list) -> None:
    """Replace, in `test`, each output value that is `close` to the stored one by the stored one,
    so that nbval's exact comparison then passes it (and reports every other difference)."""
    for new, old in zip(test, ref, strict=False):  # a missing output: nbval says so
        if new.get("output_type") != old.get("output_type"):
            continue
        if new.get("output_type") == "stream":
            if new.get("name") == old.get("name") and same_text(
                _sanitized(cell, new["text"]), _sanitized(cell, old["text"])
            ):
                new["text"] = old["text"]
            continue
        data_new, data_old = new.get("data", {}), old.get("data", {})
        for key in set(data_new) & set(data_old):
            a, b = data_new[key], data_old[key]
            if key != PLOTLY:
                a, b = _sanitized(cell, a), _sanitized(cell, b)
            if close(a, b):
                data_new[key] = data_old[key]


_compare_outputs = IPyNbCell.compare_outputs


def compare_outputs(self, test, ref, skip_compare=None):
    """nbval's comparison, after re-run outputs within float rounding of the stored ones are
    replaced by them (see the module docstring)."""
    test, ref = merge_streams(test), merge_streams(ref)
    accept_rounding(self, test, ref)
    return _compare_outputs(self, test, ref, skip_compare)


IPyNbCell.compare_outputs = compare_outputs


def pytest_collection_modifyitems(items) -> None:
    """The notebooks' cells are `blas` tests: their stored numbers must re-run under any BLAS."""
    for item in items:
        if isinstance(item, IPyNbCell):
            item.add_marker(pytest.mark.blas)


@pytest.hookimpl(trylast=True)  # after nbval has mapped its deprecated --sanitize-with
def pytest_configure(config) -> None:
    """Default nbval's sanitize file to the one beside this plugin."""
    if getattr(config.option, "nbval_sanitize_with", None) is None:
        config.option.nbval_sanitize_with = str(SANITIZE)
