"""A saved score grid reads back as it was written, and bad files are refused by name."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from mlx_headwidget.gridfile import load_grid, save_grid


def test_round_trip(tmp_path):
    grid = np.random.default_rng(0).random((4, 8))
    grid[1, 2] = np.nan  # a layer not scanned
    std = grid / 10
    path = save_grid(tmp_path / "scan", grid, kind="induction", model="m", std=std,
                     settings={"n_samples": 4})  # fmt: skip
    assert path == tmp_path / "scan" and sorted(p.name for p in tmp_path.iterdir()) == ["scan"]
    saved = load_grid(path)
    np.testing.assert_array_equal(saved.grid, grid)
    np.testing.assert_array_equal(saved.std, std)
    assert (saved.kind, saved.model, saved.settings) == ("induction", "m", {"n_samples": 4})
    figure = saved.figure()
    assert isinstance(figure, go.Figure)
    np.testing.assert_array_equal(figure.data[0].z, grid)
    assert "induction score per head of m" in figure.layout.title.text
    assert load_grid(save_grid(tmp_path / "b.npz", grid, kind="k", model="m")).std is None


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"must be \(n_layers, n_heads\), got shape \(2, 2, 2\)"):
        save_grid(tmp_path / "x.npz", np.zeros((2, 2, 2)), kind="k", model="m")
    with pytest.raises(ValueError, match=r"std has shape \(2,\), the grid \(2, 2\)"):
        save_grid(tmp_path / "x.npz", np.zeros((2, 2)), kind="k", model="m", std=np.zeros(2))
    (tmp_path / "text.npz").write_text("not an npz")
    with pytest.raises(ValueError, match="text.npz is not a saved score grid"):
        load_grid(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match=r"needs 'grid' .* it has \['a'\]"):
        load_grid(tmp_path / "other.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.npz", "text.npz"]
