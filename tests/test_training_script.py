"""The training script refuses nonsense settings and never overwrites a model by accident."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "train_default_model.py"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--layers", "0"], "--layers must be >= 1"),
        (["--heads", "7"], "must be >= 1 and divide --width"),
        (["--kv-heads", "3"], "must be >= 1 and divide --heads"),
        (["--block-min", "70"], "--block-min <= --block-max"),
        (["--head-dropout", "1.5"], "--head-dropout must be in [0, 1)"),
        (["--grow-from", "4"], "--grow-from must be 0 or 2 .. --layers - 1"),
        (["--keep-checkpoints", "1000,x"], "give 'all' or steps like 1000,1100"),
        (["--keep-checkpoints", "0"], "steps must be >= 1"),
        (["--vocab", "300"], "--warmup-vocab must be 0 .. --vocab (300) (got 512)"),
        (["--stop-after", "-1"], "--stop-after must be >= 0"),
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


def test_head_dropout_zeroes_exactly_one_head_per_dropped_layer(checkpoint):
    """A HeadDropout mask that drops head h of layer l gives the logits of zero_heads([(l, h)])."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    from mlx_headwidget import InterpretableModel
    from mlx_headwidget import interventions as iv

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from train_default_model import HeadDropout
    finally:
        sys.path.remove(str(SCRIPT.parent))
    wrapped = InterpretableModel(str(checkpoint("llama")))  # a copy of its own: it gets wrapped
    model, L, H = wrapped.model, wrapped.n_layers, wrapped.n_heads
    names = sorted(k for k, _ in tree_flatten(model.parameters()))
    tokens = mx.array([[1, 5, 6, 7, 8, 5, 6, 7]])
    clean = model(tokens)

    dropout = HeadDropout(model, p=0.5, seed=0)
    D = dropout.head_dim
    assert sorted(k for k, _ in tree_flatten(model.parameters())) == names  # same checkpoint keys
    assert mx.array_equal(model(tokens), clean)  # no mask set: the plain model

    masks = np.array(dropout.masks(4000)).reshape(L, 4000, H, D)[..., 0]  # (layers, batch, heads)
    dropped = (masks == 0).sum(axis=-1)
    assert set(np.unique(dropped)) == {0, 1}  # never more than one head per layer
    assert abs(dropped.mean() - 0.5) < 0.03
    assert np.all(np.abs((masks == 0).mean(axis=1) - 0.5 / H) < 0.03)  # every head as often

    keep = np.ones((L, 1, 1, H * D), np.float32)
    keep[1, 0, 0, 1 * D : 2 * D] = 0.0  # layer 1, head 1
    dropout.set(mx.array(keep))
    masked = np.array(model(tokens))
    dropout.set(None)
    with InterpretableModel(str(checkpoint("llama"))).trace(
        tokens, interventions=iv.ablate_heads([(1, 1)]), capture=False
    ) as trace:
        pass
    assert np.allclose(masked, np.array(trace.logits), atol=1e-5)
    assert not np.allclose(masked, np.array(clean), atol=1e-3)


def test_split_head_makes_two_copies_of_one_head(checkpoint):
    """After split_head(l, h), heads h and h' attend alike, and the model computes what it computed
    with h' zero-ablated (h and h' share h's output projection)."""
    import mlx.core as mx
    import numpy as np

    from mlx_headwidget import InterpretableModel
    from mlx_headwidget import interventions as iv
    from mlx_headwidget.capture import capture_attention

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from train_default_model import split_head
    finally:
        sys.path.remove(str(SCRIPT.parent))
    original = InterpretableModel(str(checkpoint("llama")))
    model = InterpretableModel(str(checkpoint("llama")))  # a copy of its own: it gets changed
    H, KV = model.n_heads, model.n_kv_heads
    tokens = mx.array([[1, 5, 6, 7, 8, 5, 6, 7]])
    ind = np.zeros((model.n_layers, H))
    ind[1, 0] = 0.9  # the head to split; its KV group's other heads score 0.1, 0.05, ...
    ind[1, 1 : H // KV] = np.linspace(0.1, 0.05, H // KV - 1)
    other = split_head(model.model, 1, 0, ind)
    assert other == H // KV - 1  # the lowest-scoring head of the same KV group

    kept = {}
    capture_attention(model, tokens, layers=[1], on_pattern=lambda i, p: kept.update({i: p}))
    patterns = kept[1][0]
    assert np.allclose(np.array(patterns[0]), np.array(patterns[other]), atol=1e-6)
    with original.trace(tokens, interventions=iv.ablate_heads([(1, other)]), capture=False) as t:
        pass
    assert np.allclose(np.array(model.model(tokens)), np.array(t.logits), atol=1e-4)


def test_text_rows_with_repeated_spans():
    """Each row is BOS + text with three spans of 2-12 random ids, each written twice, in order."""
    import numpy as np

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from train_default_model import Batches
    finally:
        sys.path.remove(str(SCRIPT.parent))
    text = np.arange(1000, 1000 + 5000) % 7 + 3  # ids 3..9 only: the random spans stand out
    data = Batches(text, vocab=2048, n_special=10, seq_len=96, seed=0)  # span ids >= 10
    rows = data.text_with_repeat(50)
    assert rows.shape == (50, 97) and np.all(rows[:, 0] == 0)
    part = 96 // 3  # span k and its copy lie in positions 1 + k * part .. (k + 1) * part
    for row in rows:
        for k in range(3):
            region = row[1 + k * part : 1 + (k + 1) * part]
            where = np.flatnonzero(region >= 10)
            n = len(where) // 2
            first, second = where[:n], where[n:]
            assert 2 <= n <= 12 and len(where) == 2 * n
            assert np.all(np.diff(first) == 1) and np.all(np.diff(second) == 1)
            assert second[0] > first[-1] and np.array_equal(region[first], region[second])


def test_repeated_spans_of_text():
    """text_span_fraction=1: every repeated span is a snippet of the text stream; 0: random ids."""
    import numpy as np

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from train_default_model import Batches
    finally:
        sys.path.remove(str(SCRIPT.parent))
    text = np.arange(10, 100_010)  # every id once: a repeated id can only come from a span
    data = Batches(text, vocab=100_010, n_special=10, seq_len=96, seed=0)
    part = 96 // 3
    for fraction, snippets in ((1.0, 3 * 40), (0.0, 0)):
        rows = data.text_with_repeat(40, text_span_fraction=fraction)
        found = 0
        for row in rows:
            for k in range(3):
                region = row[1 + k * part : 1 + (k + 1) * part]
                values, counts = np.unique(region, return_counts=True)
                span = values[counts == 2]
                assert 2 <= len(span) <= 12 and np.all(counts <= 2)
                found += bool(np.all(np.diff(span) == 1))  # consecutive ids: a text snippet
        assert found == snippets


def test_kept_checkpoints_are_the_weights_of_their_steps(tmp_path):
    """A short run keeps the weights of step 10 (of evaluations at 5 and 10) and stops there: the
    checkpoint holds what the saved model holds, as float16, and the log says which step has one."""
    out = tmp_path / "run"
    small = ["--layers", "2", "--width", "64", "--heads", "8", "--kv-heads", "2", "--mlp", "128"]
    data = ["--vocab", "300", "--warmup-vocab", "300", "--seq-len", "32", "--batch", "4"]
    warm = ["--block-max", "12", "--warmup-steps", "5", "--warmup-block-max", "8"]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *small, *data, *warm, "--eval-every", "5"]
        + ["--eval-block", "10"]
        + ["--keep-checkpoints", "10", "--stop-after", "10"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    log = json.loads((out / "training_log.json").read_text())
    assert log["steps"] == [5, 10] and log["final"]["steps"] == 10
    assert log["checkpoints"] == [None, "checkpoints/step_00010.safetensors"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00010.safetensors"]
    kept, saved = mx.load(str(out / log["checkpoints"][1])), mx.load(str(out / "model.safetensors"))
    assert kept.keys() == saved.keys()
    for name, value in kept.items():
        assert value.dtype == mx.float16
        assert mx.array_equal(value, saved[name])  # the same weights, saved twice
