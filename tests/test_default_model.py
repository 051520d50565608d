"""The bundled default model: its files, and the induction circuit its weights must contain."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_headwidget import InterpretableModel
from mlx_headwidget.analysis import ablation_effect
from mlx_headwidget.detect import detect_induction_heads
from mlx_headwidget.tutorial import full_induction_analysis

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "mlx_headwidget" / "default_model"
sys.path.insert(0, str(ROOT / "training"))
try:  # the measurements MODEL.md reports, re-run here on the shipped files
    from model_card import (
        SEEDS,
        N,
        control_heads,
        measure,
        previous_token_grid,
        second_copy_loss,
        write_card,
    )
finally:
    sys.path.remove(str(ROOT / "training"))


@pytest.fixture(scope="module")
def model() -> InterpretableModel:
    return InterpretableModel()


@pytest.fixture(scope="module")
def induction(model):
    return detect_induction_heads(
        model, n_random_tokens=N, threshold=0.0, seed=SEEDS[0], n_samples=len(SEEDS), progress=False
    )


def test_folder_has_the_mlx_lm_layout_and_is_small():
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "training_log.json",
        "MODEL.md",
    ):
        assert (FOLDER / name).is_file(), name
    assert sum(f.stat().st_size for f in FOLDER.iterdir()) < 16 * 2**20
    weights = mx.load(str(FOLDER / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {mx.float16}


def test_loads_with_mlx_lm_and_transformers():
    import mlx_lm
    from transformers import AutoTokenizer

    mlx_model, tokenizer = mlx_lm.load(str(FOLDER))
    hf = AutoTokenizer.from_pretrained(str(FOLDER))
    ids = hf("The cat sat")["input_ids"]
    assert (
        ids[0] == hf.bos_token_id
        and ids[1:] == hf("The cat sat", add_special_tokens=False)["input_ids"]
    )
    assert tokenizer.encode("The cat sat") == ids
    logits = mlx_model(mx.array(ids)[None])
    # one logit per token the tokenizer knows (special tokens included), no more, no fewer
    assert logits.shape == (1, len(ids), len(hf)) and len(hf) == hf.vocab_size


def test_architecture(model):
    assert model.architecture == "llama"
    assert model.n_layers >= 4 and model.n_heads == 8 and model.n_kv_heads < model.n_heads
    card = (FOLDER / "MODEL.md").read_text()
    tied = model.model.args.tie_word_embeddings
    assert ("tied embeddings" in card) == tied
    assert ("Why the embeddings are not tied" in card) == (not tied)


def test_two_strong_induction_heads(induction):
    assert len([h for h in induction if h.score >= 0.8]) >= 2, induction[:4]


def test_previous_token_head_feeds_the_top_induction_head(model, induction):
    top = induction[0]
    prev = previous_token_grid(model)
    assert top.layer > 0
    assert prev[: top.layer].max() >= 0.8, prev.round(2)


def test_ablating_top_induction_heads_breaks_copying(model, induction):
    clean = second_copy_loss(model, [])
    top_two = [(h.layer, h.head) for h in induction[:2]]
    ablated = second_copy_loss(model, top_two)
    control = second_copy_loss(model, control_heads(model, induction))
    assert ablated >= 3 * clean, (clean, ablated)
    assert control - clean < 0.25 * (ablated - clean), (clean, control, ablated)


def test_cat_sat_needs_the_induction_heads(model, induction):
    text = "The cat sat on the mat. The cat"
    heads = [(h.layer, h.head) for h in induction if h.score >= 0.8]
    result = ablation_effect(model, text, heads)
    assert result.top_before[0][0] == " sat", result.top_before
    assert result.top_after[0][0] != " sat", result.top_after


def test_training_log_has_per_head_scores(model):
    log = json.loads((FOLDER / "training_log.json").read_text())
    assert len(log["steps"]) >= 5
    for key in ("train_loss", "val_loss", "repeat_loss", "induction", "previous_token"):
        assert len(log[key]) == len(log["steps"]), key
    assert np.array(log["induction"]).shape == (len(log["steps"]), model.n_layers, model.n_heads)


def test_tutorial_analysis_runs_on_the_bundled_model_by_default():
    """model=None analyses the bundled model, whose induction heads carry the second copy."""
    results = full_induction_analysis()
    assert results["model"].startswith("InterpretableModel(llama: 4 layers, 8 heads")
    assert results["induction_heads"] and results["induction_heads"][0].score > 0.5
    loss = results["repeated_loss"]
    assert loss["normal"]["later_copies"] < loss["normal"]["first_copy"] / 2
    assert loss["heads_zeroed"]["later_copies"] > 2 * loss["normal"]["later_copies"]
    assert loss["heads_zeroed"]["later_copies"] > loss["control_zeroed"]["later_copies"]


def test_bundled_model_computes_in_float32_from_float16_files(model):
    from mlx.utils import tree_flatten

    assert {p.dtype for _, p in tree_flatten(model.model.parameters())} == {mx.float32}
    stored = mx.load(str(FOLDER / "model.safetensors"))
    name, weight = next(iter(stored.items()))
    loaded = dict(tree_flatten(model.model.parameters()))[name]
    assert mx.array_equal(loaded, weight.astype(mx.float32))  # exact: float16 -> float32


# A number as the card prints it: 500,288 / 0.965 / 21 (head names L2H3 give 2 and 3).
NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?")


def same_when_printed(new: str, old: str) -> bool:
    """Integers (ranks, steps, head indices) equal; decimals printed to the same number of places
    and at most one unit of the last place apart."""
    if "." not in old:
        return new == old
    places = len(old.split(".")[1])
    return len(new.split(".")[-1]) == places and abs(float(new) - float(old)) <= 1.01 * 10**-places


def test_card_states_what_model_card_measures():
    """Every number in MODEL.md is what training/model_card.py measures on the shipped files.

    The card is written again from a fresh `measure` (5-10 s on 2 cores) and compared with the
    stored one: the same text, and each number at the precision the card prints it. Measured
    (2026-11-28): every number prints identically under OpenBLAS (own and Haswell kernels) and
    MLX's bundled BLAS; one unit of the last printed place is allowed so that a value sitting on
    a rounding boundary may print one digit apart on another CPU.
    """
    stored = (FOLDER / "MODEL.md").read_text()
    card = write_card(FOLDER, measure(FOLDER))
    # Not a measurement: the Python whose docstrings were the training text. write_card prints
    # the version of the interpreter that writes the card, which need not be the one running here.
    python = re.compile(r"docstrings of the Python \d+\.\d+")
    card = python.sub(python.search(stored)[0], card)
    assert NUMBER.sub("#", card) == NUMBER.sub("#", stored)  # the same heads, tokens, sentences
    new, old = NUMBER.findall(card), NUMBER.findall(stored)
    lines = [line for line in stored.splitlines() for _ in NUMBER.findall(line)]
    differ = [
        (o, n, line)
        for n, o, line in zip(new, old, lines, strict=True)
        if not same_when_printed(n, o)
    ]
    assert differ == [], differ  # (stated, measured, the card's line)
