"""A layer x head score grid in a file: a scan run in one place, drawn in another.

`python -m mlx_headwidget MODEL --save scan.npz` (also under `mlx.launch`, where rank 0 writes
it) saves the induction grid; in a notebook, `load_grid("scan.npz").figure()` draws it. The file
is an .npz holding "grid" float64 (n_layers, n_heads), "std" (same shape: the spread over samples)
and "meta", a JSON text {"kind", "model", "settings"}; no pickles.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write


@dataclass(frozen=True)
class SavedGrid:
    """A saved grid (n_layers, n_heads) of `kind` scores of `model`, with the scan's settings."""

    grid: np.ndarray
    kind: str
    model: str
    std: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def figure(self, **kwargs: Any):
        """`plots.score_heatmap` of the grid (a plotly Figure); kwargs go to it."""
        from .plots import score_heatmap

        kwargs.setdefault("title", f"{self.kind} score per head of {self.model}")
        return score_heatmap(self.grid, kind=self.kind, **kwargs)


def save_grid(
    path: str | os.PathLike,
    grid: np.ndarray,
    *,
    kind: str,
    model: str,
    std: np.ndarray | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Write `grid` (n_layers, n_heads) and its description to `path` (atomically)."""
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 2:
        raise ValueError(f"grid must be (n_layers, n_heads), got shape {grid.shape}")
    arrays = {"grid": grid}
    if std is not None:
        std = np.asarray(std, dtype=np.float64)
        if std.shape != grid.shape:
            raise ValueError(f"std has shape {std.shape}, the grid {grid.shape}")
        arrays["std"] = std
    meta = json.dumps({"kind": kind, "model": model, "settings": settings or {}})

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
            np.savez(f, meta=np.array(meta), **arrays)

    return atomic_write(path, write)


def load_grid(path: str | os.PathLike) -> SavedGrid:
    """Read a grid written by `save_grid`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a saved score grid: {err}") from None
    if "grid" not in arrays or "meta" not in arrays or arrays["grid"].ndim != 2:
        raise ValueError(
            f"{path} is not a saved score grid: it needs 'grid' (n_layers, n_heads) and 'meta', "
            f"it has {sorted(arrays)}"
        )
    meta = json.loads(str(arrays["meta"]))
    return SavedGrid(
        grid=arrays["grid"],
        kind=meta["kind"],
        model=meta["model"],
        std=arrays.get("std"),
        settings=meta.get("settings", {}),
    )
