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
        (["--grow-from", "4"], "--grow-from must be 0 or 2 .. --layers - 1"),
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


def test_grown_model_computes_what_the_small_one_did():
    import mlx.core as mx
    from mlx_lm.models import llama

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from train_default_model import grow
    finally:
        sys.path.remove(str(SCRIPT.parent))
    config = {
        "model_type": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": 300,
        "tie_word_embeddings": False,
    }
    small = llama.Model(llama.ModelArgs.from_dict({**config, "num_hidden_layers": 2}))
    big = grow(small, config)
    tokens = mx.array([[0, 5, 6, 7, 8, 5, 6, 7]])
    assert len(big.model.layers) == 4
    assert mx.array_equal(big(tokens), small(tokens))
    # the stacked layers are real layers: their other weights are random, not zero
    assert float(mx.abs(big.model.layers[3].self_attn.q_proj.weight).max()) > 0
