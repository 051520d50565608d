"""`mlx_headwidget.tutorial`: the whole analysis equals the library calls it is made of."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_headwidget import interventions as iv
from mlx_headwidget.analysis import ablation_effect, top_predictions
from mlx_headwidget.detect import (
    detect_head_types,
    detect_induction_heads,
    random_repeated_tokens,
    score_grid,
)
from mlx_headwidget.tutorial import (
    ABLATION_TEXT,
    TYPES_TEXT,
    control_heads,
    format_findings,
    full_induction_analysis,
    key_findings,
    predict,
    repeated_loss,
)

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

N = 12  # random tokens per block: small, so the tiny model's scans stay fast


def median_threshold(model) -> float:
    """A threshold that half of the tiny random model's heads pass."""
    every = detect_induction_heads(model, n_random_tokens=N, threshold=0.0, progress=False)
    return float(np.median([h.score for h in every]))


@pytest.fixture(scope="module")
def analysis(llama):
    threshold = median_threshold(llama)
    return threshold, full_induction_analysis(llama, n_random_tokens=N, threshold=threshold)


def test_scans_equal_the_detection_functions(llama, analysis):
    threshold, results = analysis
    heads = detect_induction_heads(
        llama, n_random_tokens=N, threshold=threshold, seed=42, n_samples=4, progress=False
    )
    assert 0 < len(results["induction_heads"]) < llama.n_layers * llama.n_heads
    assert results["induction_heads"] == heads
    grid = score_grid(llama, kind="induction", n_random_tokens=N, seed=42, n_samples=4)
    np.testing.assert_allclose(results["induction_grid"], grid, rtol=1e-12)
    assert results["head_types"] == detect_head_types(llama, TYPES_TEXT, threshold=threshold)
    for kind in ("previous_token", "first_token"):
        expected = score_grid(llama, TYPES_TEXT, kind)
        np.testing.assert_allclose(results[f"{kind}_grid"], expected, rtol=1e-12)
    grid = results["previous_token_grid"]
    best = np.unravel_index(np.argmax(grid), grid.shape)
    prev = results["best_previous_token_head"]
    assert (prev.layer, prev.head) == tuple(int(i) for i in best)


def test_ablations_equal_traces_with_the_interventions(llama, analysis):
    _, results = analysis
    ablation = results["ablation"]
    heads = [(h.layer, h.head) for h in results["induction_heads"]]
    assert ablation["heads"] == heads
    assert ablation["layer"] == results["induction_heads"][0].layer
    with llama.trace(ABLATION_TEXT, capture=False) as clean:
        pass
    assert ablation["normal"] == top_predictions(llama, clean.logits[0, -1], 3)
    path = f"model.model.layers.{ablation['layer']}.self_attn"
    with llama.trace(ABLATION_TEXT, interventions={path: iv.zero_out}, capture=False) as zeroed:
        pass
    assert ablation["layer_zeroed"] == top_predictions(llama, zeroed.logits[0, -1], 3)
    assert ablation["layer_zeroed"] != ablation["normal"]
    assert ablation["heads_zeroed"] == ablation_effect(llama, ABLATION_TEXT, heads, 3).top_after


def test_control_heads_are_outside_the_circuit(analysis):
    threshold, results = analysis
    loss = results["repeated_loss"]
    grids = np.maximum(results["induction_grid"], results["previous_token_grid"])
    assert len(loss["control_heads"]) == len(loss["heads"])
    assert not set(loss["control_heads"]) & set(loss["heads"])
    rest = [h for h in np.ndindex(grids.shape) if h not in loss["heads"]]
    below = sorted(rest, key=lambda h: grids[h])[: len(loss["heads"])]
    worst = max(grids[h] for h in loss["control_heads"])
    assert worst < max(threshold, 0.1) or sorted(loss["control_heads"]) == sorted(below)
    assert loss["heads_zeroed"] != loss["normal"]
    assert loss["control_zeroed"] != loss["heads_zeroed"]


def test_control_heads_draws_from_the_heads_under_the_bar():
    induction = np.array([[0.9, 0.05, 0.05, 0.05], [0.05, 0.05, 0.9, 0.05]])
    previous = np.array([[0.05, 0.9, 0.05, 0.05], [0.05, 0.05, 0.05, 0.05]])
    outside = {(0, 2), (0, 3), (1, 0), (1, 1), (1, 3)}
    drawn = {tuple(control_heads(induction, previous, 2, 0.3, seed)) for seed in range(40)}
    assert all(set(pair) <= outside and len(set(pair)) == 2 for pair in drawn)
    assert len(drawn) > 3  # random, not always the same pair
    assert control_heads(induction, previous, 2, 0.3, 5) == control_heads(
        induction, previous, 2, 0.3, 5
    )
    # too few under the bar: the lowest max(induction, previous), ties in layer-head order
    assert control_heads(induction, previous, 7, 0.3) == sorted(outside | {(0, 0), (0, 1)})
    assert control_heads(induction, previous, 6, 0.3, exclude=[(0, 0)]) == sorted(
        outside | {(0, 1)}
    )


@pytest.mark.parametrize("n_repeats", [2, 3])
def test_repeated_loss_is_the_mean_of_the_per_token_losses(llama, n_repeats):
    heads = [(0, 1), (1, 2)]
    got = repeated_loss(llama, heads, n_random_tokens=N, n_repeats=n_repeats, seed=7, n_samples=2)
    first, later = [], []
    for seed in (7, 8):
        tokens = random_repeated_tokens(llama, N, n_repeats, seed)
        loss = ablation_effect(llama, tokens, heads).token_loss_after
        assert len(loss) == N * n_repeats  # predictions of tokens 1 .. T-1
        first.append(loss[:N].mean())
        later.append(loss[N + 1 :].mean())  # the first token of copy 2 is not predictable
    assert got == pytest.approx({"first_copy": np.mean(first), "later_copies": np.mean(later)})
    assert repeated_loss(llama, n_random_tokens=N, n_samples=1) != repeated_loss(
        llama, heads, n_random_tokens=N, n_samples=1
    )


def test_predict_applies_interventions(llama):
    clean = predict(llama, ABLATION_TEXT, top_k=4)
    assert len(clean) == 4 and clean[0][1] >= clean[-1][1]
    zeroed = predict(llama, ABLATION_TEXT, iv.ablate_heads([(1, h) for h in range(4)]), top_k=4)
    assert zeroed != clean


def test_no_head_above_threshold_ablates_the_best_one(llama):
    results = full_induction_analysis(llama, n_random_tokens=N, threshold=1.0, n_samples=1)
    assert results["induction_heads"] == []
    best = np.unravel_index(np.argmax(results["induction_grid"]), results["induction_grid"].shape)
    assert results["ablation"]["heads"] == [tuple(int(i) for i in best)]
    assert all(heads == [] for heads in results["head_types"].values())
    rows = dict(key_findings(results))
    assert rows["Top induction heads"] == "none"
    assert rows["Induction heads (score >= 1.0)"] == "0: none"


def test_key_findings_quote_the_results(analysis):
    threshold, results = analysis
    rows = key_findings(results, n_top=2)
    names = [name for name, _ in rows]
    assert names[0] == "Top induction heads" and len(rows) == 6
    top = results["induction_heads"][:2]
    assert dict(rows)["Top induction heads"] == ", ".join(
        f"L{h.layer}H{h.head} ({h.score:.2f})" for h in top
    )
    n = len(results["induction_heads"])
    assert dict(rows)[f"Induction heads (score >= {threshold})"].startswith(f"{n}: ")
    normal = results["repeated_loss"]["normal"]
    assert f"first copy {normal['first_copy']:.2f}" in rows[-1][1]

    lines = format_findings(rows).splitlines()
    assert lines[0].startswith("Finding") and len(lines) == len(rows) + 2
    column = lines[0].index("Details")
    for line, (name, details) in zip(lines[2:], rows, strict=True):
        assert line[:column].rstrip() == name and line[column:] == details


@pytest.mark.parametrize(
    ("threshold", "error"), [(1.5, ValueError), (-0.1, ValueError), ("0.3", TypeError)]
)
def test_bad_threshold_is_refused_before_loading(threshold, error):
    with pytest.raises(error, match="threshold"):
        full_induction_analysis("/no/such/folder", threshold=threshold)


def test_bad_sample_count(llama):
    with pytest.raises(ValueError, match="n_samples"):
        repeated_loss(llama, n_samples=0)
