"""Activation patching: batched equals one head at a time, the identities patching must satisfy,
attribution patching is the gradient and tracks exact patching on the bundled model, bad input."""

from __future__ import annotations

import re

import mlx.core as mx
import numpy as np
import pytest
from conftest import TEXT

from mlx_headwidget import interventions as iv
from mlx_headwidget import patching
from mlx_headwidget.capture import capture_attention
from mlx_headwidget.detect import random_repeated_tokens, score_grid
from mlx_headwidget.errors import InputError, OutOfRangeError
from mlx_headwidget.testing import LOGITS_RTOL

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

CASES = ["llama", "llama-4bit", "qwen3", "mistral", "phi3", "gpt2", "gemma2"]
ANSWER, DISTRACTOR = 5, 7


def pair(model) -> tuple[mx.array, mx.array]:
    """(clean, corrupted) ids (1, T): TEXT, and TEXT with the first half of its tokens after BOS
    reversed (the same length, the same last token)."""
    clean = model.to_tokens(TEXT)
    corrupted = np.array(clean)
    half = corrupted.shape[1] // 2
    corrupted[0, 1:half] = corrupted[0, 1:half][::-1]
    return clean, mx.array(corrupted)


def metric(model, tokens) -> tuple[float, float]:
    """(logit(ANSWER) - logit(DISTRACTOR) at the last position, max(1, max |logits|))."""
    logits = np.array(capture_attention(model, tokens, layers=[]), dtype=np.float64)
    return logits[0, -1, ANSWER] - logits[0, -1, DISTRACTOR], max(1.0, np.abs(logits).max())


def metric_atol(scale: float) -> float:
    """A logit difference is two logits, each within LOGITS_RTOL of the logits' size between two
    computations (here: a batch of rows against one row); measured up to 1.7e-6 * scale."""
    return 2 * LOGITS_RTOL * scale


def one_at_a_time(model, source, target) -> np.ndarray:
    """The reference: each head patched alone, in its own forward, by `on_heads` (not the
    batched `replace_heads` path): (n_layers, n_heads)."""
    _, source_z = patching.head_outputs(model, source)
    grid = np.zeros((model.n_layers, model.n_heads))
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            chosen = (mx.arange(model.n_heads) == head)[None, None, :, None]

            def patch(h, layer=layer, chosen=chosen):
                return mx.where(chosen, source_z[layer], h)

            ivs = {f"model.model.layers.{layer}.self_attn": iv.on_heads(patch)}
            logits = capture_attention(model, target, layers=[], interventions=ivs)
            grid[layer, head] = (logits[0, -1, ANSWER] - logits[0, -1, DISTRACTOR]).item()
    return grid


@pytest.mark.parametrize("case", CASES)
def test_batched_patching_equals_one_head_at_a_time(models, case):
    model = models(case)
    clean, corrupted = pair(model)
    expected = one_at_a_time(model, clean, corrupted)
    _, scale = metric(model, corrupted)
    for batch in (32, 3, 1):  # all heads in one forward; chunks across layers; one per forward
        got = patching.patched_logit_diffs(model, clean, corrupted, ANSWER, DISTRACTOR, batch=batch)
        np.testing.assert_allclose(got, expected, rtol=0, atol=metric_atol(scale))
    assert np.ptp(expected) > 1e-3  # heads differ: a wrong head or layer would show


@pytest.mark.parametrize("case", CASES)
def test_patching_a_run_into_itself_and_every_head_at_once(models, case):
    """clean into clean gives m(clean) for every head (share 1), corrupted into corrupted
    m(corrupted) (share 0); with every head of every layer patched, the last position (the same
    token in both) is computed from clean values only: share 1. No head patched: share 0."""
    model = models(case)
    clean, corrupted = pair(model)
    (m_clean, scale), (m_corrupted, _) = metric(model, clean), metric(model, corrupted)
    atol = metric_atol(scale)
    for tokens, m in ((clean, m_clean), (corrupted, m_corrupted)):
        got = patching.patched_logit_diffs(model, tokens, tokens, ANSWER, DISTRACTOR)
        np.testing.assert_allclose(got, np.full_like(got, m), rtol=0, atol=atol)
    every = [(layer, h) for layer in range(model.n_layers) for h in range(model.n_heads)]
    recoverable = abs(m_clean - m_corrupted)
    assert recoverable > 1e-2
    share = patching.patch_head_group(model, clean, corrupted, ANSWER, DISTRACTOR, every)
    assert abs(share - 1.0) <= atol / recoverable
    share = patching.patch_head_group(model, clean, corrupted, ANSWER, DISTRACTOR, [])
    assert abs(share) <= atol / recoverable
    grid = patching.patch_heads(model, clean, corrupted, ANSWER, DISTRACTOR)
    patched = patching.patched_logit_diffs(model, clean, corrupted, ANSWER, DISTRACTOR)
    np.testing.assert_allclose(grid * (m_clean - m_corrupted) + m_corrupted, patched, atol=atol)


def induction_pair(model, seed: int, n: int = 20, k: int = 8):
    """clean = [BOS] x x[:k] (copying continues with x[k]); corrupted: its last token replaced by
    a random one; distractor: the corrupted run's preferred token (not the answer)."""
    x = random_repeated_tokens(model, n, 2, seed=seed)[0].tolist()
    other = random_repeated_tokens(model, n, 2, seed=seed + 100)[0, 5].item()
    clean = x[: 1 + n + k]
    corrupted = [*clean[:-1], other]
    answer = x[1 + k]
    logits = capture_attention(model, corrupted, layers=[])[0, -1]
    ranked = [int(i) for i in np.argsort(-np.array(logits))[:2]]
    return clean, corrupted, answer, next(i for i in ranked if i != answer)


def test_attribution_patching_tracks_exact_patching_on_the_bundled_model(bundled):
    """With the last token corrupted (the induction heads' query), the gradient approximation
    ranks heads as exact patching does: correlation measured 0.956, 0.999, 0.882 for seeds 1, 3,
    5, and both put the two induction heads first."""
    induction = score_grid(bundled, kind="induction")
    top2 = set(np.argsort(-induction.ravel())[:2])
    for seed in (1, 3, 5):
        clean, corrupted, answer, distractor = induction_pair(bundled, seed)
        exact = patching.patch_heads(bundled, clean, corrupted, answer, distractor)
        approx = patching.attribution_patch(bundled, clean, corrupted, answer, distractor)
        assert np.corrcoef(exact.ravel(), approx.ravel())[0, 1] >= 0.8, seed
        assert set(np.argsort(-exact.ravel())[:2]) == top2, seed
        assert set(np.argsort(-approx.ravel())[:2]) == top2, seed


@pytest.mark.parametrize("case", ["llama", "bundled"])
def test_attribution_patching_is_the_derivative_of_a_small_patch(models, bundled, case):
    """attribution[l, h] (m(clean) - m(corrupted)) = d/de m(corrupted, z[l, h] + e (z_clean -
    z_corrupted)[l, h]) at e = 0, checked by a central difference (e = 0.01) on an interpolated
    patch, for the three largest terms."""
    model = bundled if case == "bundled" else models(case)
    if case == "bundled":
        clean, corrupted, answer, distractor = induction_pair(model, seed=1)
    else:
        (clean, corrupted), answer, distractor = pair(model), ANSWER, DISTRACTOR
    approx = patching.attribution_patch(model, clean, corrupted, answer, distractor)
    _, clean_z = patching.head_outputs(model, clean)

    def m(layer, head, e):
        chosen = (mx.arange(model.n_heads) == head)[None, None, :, None]

        def nudge(h):
            return mx.where(chosen, h + e * (clean_z[layer] - h), h)

        ivs = {f"model.model.layers.{layer}.self_attn": iv.on_heads(nudge)}
        last = capture_attention(model, corrupted, layers=[], interventions=ivs)[0, -1]
        return (last[answer] - last[distractor]).item()

    clean_last = capture_attention(model, clean, layers=[])[0, -1]
    recoverable = (clean_last[answer] - clean_last[distractor]).item() - m(0, 0, 0.0)
    worst = 0.0
    for index in np.argsort(-np.abs(approx.ravel()))[:3]:  # the largest terms
        layer, head = divmod(int(index), model.n_heads)
        e = 1e-2
        slope = (m(layer, head, e) - m(layer, head, -e)) / (2 * e)
        worst = max(worst, abs(slope - approx[layer, head] * recoverable) / abs(recoverable))
    assert worst <= 1e-3  # measured 3.2e-5 (llama), 2.7e-5 (bundled): e^2 terms and float noise


def test_progress_counts_the_forwards_and_the_model_is_left_as_it_was(llama, model_state):
    clean, corrupted = pair(llama)
    before = model_state(llama)
    calls = []
    patching.patch_heads(
        llama, clean, corrupted, ANSWER, DISTRACTOR, batch=3, progress=lambda *a: calls.append(a)
    )
    n = llama.n_layers * llama.n_heads
    assert calls == [(i, -(-n // 3)) for i in range(1, -(-n // 3) + 1)]
    patching.attribution_patch(llama, clean, corrupted, ANSWER, DISTRACTOR)
    assert model_state(llama) == before

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        patching.patch_heads(llama, clean, corrupted, ANSWER, DISTRACTOR, progress=stop)
    assert model_state(llama) == before


CLEAN = object()  # stands for the clean input
BAD = [
    ({"corrupted": "The cat"}, InputError,
     "clean has 33 tokens, corrupted has 4"),
    ({"answer": "the cat sat"}, InputError,
     "answer 'the cat sat' is 5 tokens ['the', ' c', 'at', ' s', 'at'], not one"),
    ({"distractor": 512}, InputError, "distractor id 512 is outside the vocabulary 0..511"),
    ({"distractor": ANSWER}, InputError, "answer and distractor are the same token (5)"),
    ({"corrupted": CLEAN}, InputError, "with nothing to recover, the share"),
    ({"clean": [TEXT, TEXT]}, InputError, "clean must be one sequence, got a batch of 2"),
]  # fmt: skip


@pytest.mark.parametrize("function", ["patch_heads", "attribution_patch"])
@pytest.mark.parametrize(("change", "error", "message"), BAD)
def test_bad_input_is_refused_with_a_clear_message(llama, function, change, error, message):
    clean, corrupted = pair(llama)
    args = {"clean": clean, "corrupted": corrupted, "answer": ANSWER, "distractor": DISTRACTOR}
    args.update(change)
    if args["corrupted"] is CLEAN:
        args["corrupted"] = clean
    with pytest.raises(error, match=re.escape(message)):
        getattr(patching, function)(llama, **args)


def test_bad_batch_and_heads(llama):
    clean, corrupted = pair(llama)
    with pytest.raises(ValueError, match=re.escape("batch must be a positive integer")):
        patching.patch_heads(llama, clean, corrupted, ANSWER, DISTRACTOR, batch=0)
    with pytest.raises(OutOfRangeError, match=re.escape("layer 2 is out of range: valid 0..1")):
        patching.patch_heads(llama, clean, corrupted, ANSWER, DISTRACTOR, heads=[(2, 0)])
    with pytest.raises(TypeError, match=re.escape("heads must be (layer, head) pairs")):
        patching.patch_head_group(llama, clean, corrupted, ANSWER, DISTRACTOR, [3])
    some = patching.patch_heads(llama, clean, corrupted, ANSWER, DISTRACTOR, heads=[(1, 2)])
    assert np.isnan(some).sum() == some.size - 1 and np.isfinite(some[1, 2])
