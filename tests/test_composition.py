"""Composition scores: against a direct numpy implementation on the raw weights, their range and
NaN pattern, the bundled model's circuit (previous-token heads feed the induction heads' keys)."""

from __future__ import annotations

import re

import mlx.core as mx
import numpy as np
import pytest

from mlx_headwidget.composition import composition_scores
from mlx_headwidget.detect import random_repeated_tokens, score_grid
from mlx_headwidget.errors import OutOfRangeError, UnsupportedArchitectureError

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS


def raw(module) -> np.ndarray:
    """A projection's weight (out, in) as float64, dequantized if the module is quantized."""
    if "scales" in module:
        w = mx.dequantize(
            module.weight, module.scales, module.get("biases"), module.group_size, module.bits
        )
        return np.array(w, dtype=np.float64)
    return np.array(module.weight, dtype=np.float64)


def head_matrices(model, layer: int, fold: bool):
    """[(W_QK, W_OV)] per query head, (d_model, d_model) each, written out in full."""
    H, KV, D = model.n_heads, model.n_kv_heads, model.d_head
    block = model.layers[layer]
    attn = model.attention(layer)
    if model.architecture == "gpt2":
        q, k, v = np.split(raw(attn.c_attn), 3)
        o, norm = raw(attn.c_proj), block.ln_1
    elif "qkv_proj" in attn:
        q, k, v = np.split(raw(attn.qkv_proj), [H * D, (H + KV) * D])
        o, norm = raw(attn.o_proj), block.input_layernorm
    else:
        q, k, v = raw(attn.q_proj), raw(attn.k_proj), raw(attn.v_proj)
        o, norm = raw(attn.o_proj), block.input_layernorm
    g = np.array(norm.weight, dtype=np.float64) if fold else np.ones(o.shape[0])
    out = []
    for h in range(H):
        kv = h // (H // KV)  # GQA: the KV group of query head h
        wq, wk, wv = (m[i * D : (i + 1) * D] * g for m, i in ((q, h), (k, kv), (v, kv)))
        out.append((wq.T @ wk, o[:, h * D : (h + 1) * D] @ wv))
    return out


def direct_scores(model, kind: str, fold: bool) -> np.ndarray:
    L, H = model.n_layers, model.n_heads
    heads = [head_matrices(model, layer, fold) for layer in range(L)]
    fro = np.linalg.norm
    scores = np.full((L, H, L, H), np.nan)
    for l1 in range(L):
        for l2 in range(l1 + 1, L):
            for h1, (_, ov1) in enumerate(heads[l1]):
                for h2, (qk2, ov2) in enumerate(heads[l2]):
                    x = {"k": qk2, "q": qk2.T, "v": ov2}[kind]
                    scores[l1, h1, l2, h2] = fro(x @ ov1) / (fro(x) * fro(ov1))
    return scores


@pytest.mark.parametrize("case", ["llama", "llama-4bit", "qwen2", "phi3", "gpt2", "bundled"])
def test_scores_equal_a_direct_numpy_implementation(models, bundled, case):
    """Float32 low-rank products against float64 full matrices: measured up to 3e-8."""
    model = bundled if case == "bundled" else models(case)
    L, H = model.n_layers, model.n_heads
    later = np.arange(L)[None, None, :, None] > np.arange(L)[:, None, None, None]
    defined = np.broadcast_to(later, (L, H, L, H))
    for kind in ("k", "q", "v"):
        for fold in (True, False):
            got = composition_scores(model, kind, fold_norms=fold)
            assert got.shape == (L, H, L, H)
            assert np.isnan(got[~defined]).all() and np.isfinite(got[defined]).all()
            assert (got[defined] > 0).all() and (got[defined] <= 1).all()  # ||AB|| <= ||A|| ||B||
            expected = direct_scores(model, kind, fold)
            np.testing.assert_allclose(got[defined], expected[defined], rtol=0, atol=1e-6)
    assert np.abs(got[defined] - composition_scores(model, "k")[defined]).max() > 1e-3


def test_previous_token_heads_rank_first_in_k_composition_into_the_induction_heads(bundled):
    """The bundled model's circuit in its weights: the earlier heads whose keys carry "my previous
    token" (previous-token score > 0.9) are the top sources of K-composition into each of the
    two induction heads (measured: L1H0, L1H6, L1H5, L1H3 ranked 1-4 of 16 for both, 0.39-0.46,
    the next head 0.20)."""
    induction = score_grid(bundled, kind="induction")
    tokens = random_repeated_tokens(bundled, 50, 2, seed=42)
    previous = score_grid(bundled, tokens, kind="previous_token")
    top2 = [divmod(int(i), bundled.n_heads) for i in np.argsort(-induction.ravel())[:2]]
    assert {layer for layer, _ in top2} == {2}
    feeders = {(layer, h) for layer, h in zip(*np.nonzero(previous > 0.9), strict=True)}
    feeders = {(int(layer), int(h)) for layer, h in feeders if layer < 2}
    assert len(feeders) >= 2
    k = composition_scores(bundled, "k")
    for layer, head in top2:
        into = k[:layer, :, layer, head].ravel()  # every earlier head
        ranked = [divmod(int(i), bundled.n_heads) for i in np.argsort(-into)]
        assert set(ranked[: len(feeders)]) == feeders, (layer, head, ranked[:6])


def test_bad_kind_and_norms_it_cannot_fold(models, llama):
    with pytest.raises(ValueError, match=re.escape("kind must be one of 'k', 'q', 'v', got 'x'")):
        composition_scores(llama, "x")
    gemma2 = models("gemma2")  # its RMSNorm multiplies by 1 + weight: not folded
    with pytest.raises(UnsupportedArchitectureError, match=re.escape("pass fold_norms=False")):
        composition_scores(gemma2, "k")
    scores = composition_scores(gemma2, "k", fold_norms=False)
    assert np.isfinite(scores[0, :, 1, :]).all()


def test_progress_counts_the_pairs_of_layers(bundled):
    calls = []
    composition_scores(bundled, "v", progress=lambda *a: calls.append(a))
    assert calls == [(i, 6) for i in range(1, 7)]  # 4 layers: 6 (earlier, later) pairs


def test_some_reading_layers_are_the_same_numbers_as_all(bundled):
    """layers=[...] computes the chosen readers' scores as the full call does (the same per-pair
    computation: equal bits) and leaves every other reader NaN; layer 0 reads no head."""
    full = composition_scores(bundled, "k")
    calls = []
    some = composition_scores(
        bundled, "k", layers=[3, 0, 2, 2], progress=lambda *a: calls.append(a)
    )
    assert calls == [(i, 5) for i in range(1, 6)]  # (0..1 -> 2) and (0..2 -> 3): 2 + 3 pairs
    for l2 in range(bundled.n_layers):
        if l2 in (2, 3):
            np.testing.assert_array_equal(some[:, :, l2], full[:, :, l2])
        else:
            assert np.isnan(some[:, :, l2]).all()
    with pytest.raises(OutOfRangeError, match=re.escape("layer 4 is out of range: valid 0..3")):
        composition_scores(bundled, "k", layers=[4])
    with pytest.raises(TypeError, match=re.escape("layers must be integers, got '2'")):
        composition_scores(bundled, "k", layers=["2"])
