"""score_grid, detect_induction_heads and detect_head_types on a tiny random llama."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_headwidget import InterpretableModel, detect, scores
from mlx_headwidget.detect import (
    GRID_KINDS,
    HEAD_TYPES,
    HeadScore,
    detect_head_types,
    detect_induction_heads,
    heads_grid,
    random_repeated_tokens,
    score_grid,
)
from mlx_headwidget.testing import make_checkpoint

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

TEXT = "the cat and the dog and the cat and the dog sat"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> InterpretableModel:
    return InterpretableModel(str(make_checkpoint("llama", tmp_path_factory.mktemp("m"), seed=3)))


def full_patterns(model, tokens) -> dict[int, np.ndarray]:
    trace = model.run(tokens)
    return {layer: np.array(p[0]) for layer, p in trace.attention.items()}


def test_random_repeated_tokens_structure(model):
    ids = np.array(random_repeated_tokens(model, 20, 3, seed=5))[0]
    assert ids.shape == (61,) and ids[0] == model.bos_token_id
    x = ids[1:21]
    assert (ids[21:41] == x).all() and (ids[41:] == x).all()
    special = set(model.tokenizer.all_special_ids)
    assert not special & set(x.tolist())
    again = np.array(random_repeated_tokens(model, 20, 3, seed=5))[0]
    other = np.array(random_repeated_tokens(model, 20, 3, seed=6))[0]
    assert (again == ids).all() and not (other == ids).all()


@pytest.mark.parametrize("row_block", [detect.ROW_BLOCK, 4])  # one block, or several
@pytest.mark.parametrize("kind", [k for k in GRID_KINDS if k != "induction"])
def test_score_grid_matches_scores_on_the_full_trace(model, kind, row_block, monkeypatch):
    monkeypatch.setattr(detect, "ROW_BLOCK", row_block)
    grid = score_grid(model, TEXT, kind)
    tokens = model.to_tokens(TEXT)
    patterns = full_patterns(model, tokens)
    ids = np.array(tokens[0])
    name = "induction" if kind == "induction_text" else kind
    kw = {"tokens": ids} if name in ("induction", "duplicate_token") else {}
    expected = np.stack([scores.score(name, patterns[layer], **kw) for layer in sorted(patterns)])
    assert grid.shape == (model.n_layers, model.n_heads)
    np.testing.assert_allclose(grid, expected, atol=1e-6)
    assert ((grid >= 0) & (grid <= 1)).all()


@pytest.mark.parametrize("row_block", [detect.ROW_BLOCK, 7])
def test_induction_grid_is_the_mean_over_samples(model, row_block, monkeypatch):
    monkeypatch.setattr(detect, "ROW_BLOCK", row_block)
    grids = []
    for seed in (7, 8):
        tokens = random_repeated_tokens(model, 30, 2, seed)
        patterns = full_patterns(model, tokens)
        grids.append(
            np.stack([scores.induction(patterns[i], seq_len=30) for i in range(model.n_layers)])
        )
    grid = score_grid(model, kind="induction", n_random_tokens=30, seed=7, n_samples=2)
    np.testing.assert_allclose(grid, np.mean(grids, axis=0), atol=1e-6)


def test_score_grid_layers_subset_leaves_the_rest_nan(model):
    grid = score_grid(model, TEXT, "previous_token", layers=[-1])
    assert np.isnan(grid[:-1]).all() and not np.isnan(grid[-1]).any()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"kind": "banana"}, ValueError, "unknown score kind 'banana'"),
        ({"kind": "first_token", "mode": "fuzzy"}, ValueError, "unknown mode 'fuzzy'"),
        ({"kind": "first_token", "layers": [5]}, IndexError, "layer 5 is out of range"),
        ({"kind": "first_token", "layers": ["0"]}, TypeError, "layers must be integers"),
        ({"kind": "duplicate_token", "mode": "stripe"}, ValueError, "no definition for"),
    ],
)
def test_score_grid_bad_input(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        score_grid(model, TEXT, **kwargs)


def test_score_grid_needs_two_tokens(model):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        score_grid(model, [model.bos_token_id], "first_token")


def test_detect_induction_heads_sorted_thresholded_with_spread(model):
    everything = detect_induction_heads(model, threshold=0.0, n_samples=3, progress=False)
    assert len(everything) == model.n_layers * model.n_heads
    assert all(isinstance(h, HeadScore) for h in everything)
    assert [h.score for h in everything] == sorted((h.score for h in everything), reverse=True)
    cut = np.median([h.score for h in everything])
    above = detect_induction_heads(model, threshold=cut, n_samples=3, progress=False)
    assert above == [h for h in everything if h.score >= cut]
    grid = score_grid(model, kind="induction", n_samples=3)
    for h in everything:
        assert h.score == pytest.approx(grid[h.layer, h.head], abs=1e-9)
        assert h.std >= 0
    assert any(h.std > 0 for h in everything)
    # the grid from the list: the same seeds scored by the same code, so the same numbers
    shape = (model.n_layers, model.n_heads)
    np.testing.assert_array_equal(heads_grid(everything, shape), grid)
    spread = heads_grid(everything, shape, "std")
    assert spread[everything[0].layer, everything[0].head] == everything[0].std
    partial = heads_grid(above, shape)
    listed = np.zeros(shape, dtype=bool)
    listed[[h.layer for h in above], [h.head for h in above]] = True
    np.testing.assert_array_equal(partial[listed], grid[listed])
    assert np.isnan(partial[~listed]).all() and (~listed).any()
    with pytest.raises(ValueError, match="field must be 'score' or 'std', got 'mean'"):
        heads_grid(everything, shape, "mean")


@pytest.mark.parametrize(
    "threshold, error, message",
    [("0.3", TypeError, "threshold must be a number"), (1.5, ValueError, r"in \[0, 1\]")],
)
def test_detect_bad_threshold(model, threshold, error, message):
    with pytest.raises(error, match=message):
        detect_induction_heads(model, threshold=threshold, progress=False)
    with pytest.raises(error, match=message):
        detect_head_types(model, TEXT, threshold=threshold)


def test_detect_head_types_agrees_with_score_grid(model):
    types = detect_head_types(model, TEXT, threshold=0.2)
    assert set(types) == set(HEAD_TYPES)
    for kind, heads in types.items():
        grid = score_grid(model, TEXT, "induction_text" if kind == "induction" else kind)
        expected = {(int(a), int(b)) for a, b in zip(*np.nonzero(grid >= 0.2), strict=True)}
        assert {(h.layer, h.head) for h in heads} == expected
        assert all(h.score >= 0.2 for h in heads)


def test_detect_head_types_refuses_stripe(model):
    with pytest.raises(ValueError, match="'strict' or 'tl_detector'"):
        detect_head_types(model, TEXT, mode="stripe")


def test_tl_detector_mode_gives_other_numbers(model):
    strict = score_grid(model, TEXT, "previous_token")
    tl = score_grid(model, TEXT, "previous_token", mode="tl_detector")
    assert not np.allclose(strict, tl) and ((tl >= 0) & (tl <= 1)).all()


@pytest.mark.parametrize("kind, samples", [("induction", 3), ("previous_token", 1)])
def test_score_grid_progress_callback_counts_layer_forwards(model, kind, samples, monkeypatch):
    monkeypatch.setattr(detect, "ROW_BLOCK", 4)  # several blocks per layer, one tick
    calls = []
    grid = score_grid(
        model,
        TEXT,
        kind,
        n_samples=samples,
        progress=lambda done, total: calls.append((done, total)),
    )
    total = model.n_layers * samples
    assert calls == [(i, total) for i in range(1, total + 1)]
    np.testing.assert_array_equal(grid, score_grid(model, TEXT, kind, n_samples=samples))
