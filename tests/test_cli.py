"""`python -m mlx_headwidget [MODEL]` prints the layer x head induction table, or a clear error."""

from __future__ import annotations

import subprocess
import sys

from mlx_headwidget import InterpretableModel
from mlx_headwidget.detect import score_grid
from mlx_headwidget.gridfile import load_grid
from mlx_headwidget.testing import make_checkpoint


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlx_headwidget", *args], capture_output=True, text=True, timeout=300
    )


def test_prints_the_grid_of_a_folder(tmp_path):
    folder = make_checkpoint("llama", tmp_path / "m", seed=2)
    result = run(str(folder), "--samples", "2", "--threshold", "0", "--save", str(tmp_path / "g"))
    assert result.returncode == 0, result.stderr
    model = InterpretableModel(str(folder))
    grid = score_grid(model, kind="induction", n_samples=2)
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith("L")]
    table = [[float(v) for v in row[1:]] for row in rows if row[0] in {"L0", "L1"}]
    assert len(table) == model.n_layers
    assert [[round(v, 2) for v in row] for row in grid.tolist()] == table
    assert f"{model.n_layers * model.n_heads} heads score >= 0.0" in result.stdout
    saved = load_grid(tmp_path / "g")  # the grid printed, unrounded
    assert [[round(v, 2) for v in row] for row in saved.grid.tolist()] == table
    assert saved.kind == "induction" and saved.settings["n_samples"] == 2


def test_unknown_model_is_a_clear_error():
    result = run("/no/such/folder")
    assert result.returncode == 2
    assert "no folder '/no/such/folder' exists" in result.stderr
