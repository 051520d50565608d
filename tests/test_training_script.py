"""The training script refuses nonsense settings and never overwrites a model by accident."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "train_default_model.py"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--layers", "0"], "--layers must be >= 1"),
        (["--heads", "7"], "must be >= 1 and divide --width"),
        (["--kv-heads", "3"], "must be >= 1 and divide --heads"),
        (["--block-min", "30"], "--block-min <= --block-max"),
    ],
)
def test_training_script_refuses_nonsense(tmp_path, flags, message):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "m"), *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and message in run.stderr


def test_training_script_never_overwrites_without_asking(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and "pass --overwrite" in run.stderr
    assert (out / "config.json").read_text() == "{}"
