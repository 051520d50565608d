"""head_pattern and ablation_effect: the numbers the widget shows, checked against the trace."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_headwidget import InterpretableModel, analysis
from mlx_headwidget import interventions as iv
from mlx_headwidget.analysis import ablation_effect, head_pattern, head_patterns, token_losses
from mlx_headwidget.testing import PATTERN_ATOL, make_checkpoint

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

TEXT = "The cat sat on the mat. The cat"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> InterpretableModel:
    return InterpretableModel(str(make_checkpoint("llama", tmp_path_factory.mktemp("m"), seed=4)))


def test_head_pattern_is_the_traced_pattern(model):
    trace = model.run(TEXT)
    pattern = head_pattern(model, TEXT, 1, 3)
    assert pattern.dtype == np.float32
    # one layer captured, the others run mlx-lm's fast attention (fused on Metal): PATTERN_ATOL
    np.testing.assert_allclose(pattern, np.array(trace.attention[1][0, 3]), atol=PATTERN_ATOL)
    np.testing.assert_allclose(pattern.sum(axis=-1), 1.0, atol=1e-5)


def test_head_patterns_of_several_layers_in_one_forward(model, monkeypatch):
    trace = model.run(TEXT)
    forwards = []
    real = analysis.capture_attention
    monkeypatch.setattr(
        analysis, "capture_attention", lambda *a, **k: forwards.append(k["layers"]) or real(*a, **k)
    )
    heads = [(1, 3), (0, 2), (1, 0), (0, 2)]
    got = head_patterns(model, TEXT, heads)
    assert forwards == [[0, 1]] and sorted(got) == [(0, 2), (1, 0), (1, 3)]
    for (layer, head), pattern in got.items():
        assert pattern.dtype == np.float32
        # the same capture of every layer (no fast attention elsewhere): the same numbers
        np.testing.assert_array_equal(pattern, np.array(trace.attention[layer][0, head]))
    with pytest.raises(IndexError, match="head 4 is out of range"):
        head_patterns(model, TEXT, [(0, 1), (0, 4)])


@pytest.mark.parametrize(
    "layer, head, error, message",
    [
        (2, 0, IndexError, "layer 2 is out of range"),
        (0, 4, IndexError, "head 4 is out of range"),
        (0, 1.5, TypeError, "head must be an integer"),
    ],
)
def test_head_pattern_bad_head(model, layer, head, error, message):
    with pytest.raises(error, match=message):
        head_pattern(model, TEXT, layer, head)


def test_token_losses_by_hand(model):
    with model.trace(TEXT, capture=False) as trace:
        pass
    logits = np.array(trace.logits[0], dtype=np.float64)
    ids = np.array(trace.tokens[0])
    peak = logits.max(-1, keepdims=True)
    logprobs = logits - peak - np.log(np.exp(logits - peak).sum(-1, keepdims=True))
    expected = -logprobs[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(token_losses(trace.logits, trace.tokens), expected, rtol=1e-5)


def test_no_heads_changes_nothing(model):
    result = ablation_effect(model, TEXT, [])
    np.testing.assert_array_equal(result.token_loss_before, result.token_loss_after)
    assert result.top_before == result.top_after and result.loss_before == result.loss_after
    assert result.heads == [] and (result.token_loss_change == 0).all()


def test_ablation_matches_a_trace_with_zero_heads(model):
    heads = [(0, 1), (1, 2), (1, 0)]
    result = ablation_effect(model, TEXT, heads, top_k=3)
    interventions = {
        "model.model.layers.0.self_attn": iv.zero_heads([1]),
        "model.model.layers.1.self_attn": iv.zero_heads([0, 2]),
    }
    with model.trace(TEXT, capture=False, interventions=interventions) as trace:
        pass
    expected = token_losses(trace.logits, trace.tokens)
    np.testing.assert_allclose(result.token_loss_after, expected, atol=1e-6)
    assert result.loss_after == pytest.approx(expected.mean())
    assert result.loss_after != result.loss_before
    probs = np.array(mx.softmax(trace.logits[0, -1], axis=-1))
    top = np.argsort(-probs)[:3]
    assert [t for t, _ in result.top_after] == [model.token_to_str(int(i)) for i in top]
    np.testing.assert_allclose([p for _, p in result.top_after], probs[top], rtol=1e-5)
    assert result.heads == sorted(heads)
    assert result.tokens == model.to_str_tokens(TEXT)


def test_duplicate_heads_count_once(model):
    once = ablation_effect(model, TEXT, [(1, 2)])
    twice = ablation_effect(model, TEXT, [(1, 2), (1, 2)])
    assert once.heads == twice.heads == [(1, 2)]
    np.testing.assert_array_equal(once.token_loss_after, twice.token_loss_after)


def test_ablation_bad_input(model):
    with pytest.raises(IndexError, match="head 9 is out of range"):
        ablation_effect(model, TEXT, [(0, 9)])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        ablation_effect(model, [model.bos_token_id], [])


def test_baseline_gives_the_same_result_with_one_forward(model):
    heads = [(1, 2)]
    full = ablation_effect(model, TEXT, heads)
    baseline = ablation_effect(model, TEXT, [])
    fast = ablation_effect(model, TEXT, heads, baseline=baseline)
    np.testing.assert_array_equal(fast.token_loss_before, full.token_loss_before)
    np.testing.assert_array_equal(fast.token_loss_after, full.token_loss_after)
    assert fast.top_before == full.top_before and fast.top_after == full.top_after
    with pytest.raises(ValueError, match="another text"):
        ablation_effect(model, "A different text here", heads, baseline=baseline)


def test_token_losses_equal_a_float64_computation(model):
    logits = model.run(TEXT, capture=False).logits
    ids = np.array(model.to_tokens(TEXT))[0]
    x = np.array(logits[0, :-1], dtype=np.float64)
    top = x.max(axis=-1)
    want = top + np.log(np.exp(x - top[:, None]).sum(axis=-1)) - x[np.arange(len(ids) - 1), ids[1:]]
    # float32 exponentials summed in float64: measured 1.9e-8 apart on the bundled model
    np.testing.assert_allclose(token_losses(logits, model.to_tokens(TEXT)), want, rtol=0, atol=1e-6)


def test_an_ablation_from_layer_outputs_computes_from_its_first_ablated_layer(model):
    kept = ablation_effect(model, TEXT, [], keep_layer_outputs=True)
    plain = ablation_effect(model, TEXT, [])
    assert len(kept.layer_outputs.outputs) == model.n_layers and plain.layer_outputs is None
    # the same operations, evaluated layer by layer while recording: measured identical; compared
    # with a tolerance as two evaluations of the graph
    np.testing.assert_allclose(kept.token_loss_after, plain.token_loss_after, atol=1e-6)
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            heads = [(layer, head), (model.n_layers - 1, 0)]
            fast = ablation_effect(model, TEXT, heads, baseline=kept)
            full = ablation_effect(model, TEXT, heads, baseline=plain)
            # the replayed layers are those layers' own outputs on the same input, the rest the
            # same operations: measured identical (0 apart) under three BLAS settings
            np.testing.assert_allclose(fast.token_loss_after, full.token_loss_after, atol=1e-6)
            assert fast.top_after == full.top_after and fast.layer_outputs is None
    # the layers before the first ablated one are not computed: their recorded outputs are used
    outputs = kept.layer_outputs.outputs
    kept.layer_outputs.outputs = [mx.zeros_like(outputs[0]), *outputs[1:]]
    broken = ablation_effect(model, TEXT, [(1, 0)], baseline=kept)
    full = ablation_effect(model, TEXT, [(1, 0)], baseline=plain)
    assert np.abs(broken.token_loss_after - full.token_loss_after).max() > 1e-3
    # nor from a baseline of another text
    other = ablation_effect(model, "A different text here.", [], keep_layer_outputs=True)
    with pytest.raises(ValueError, match="another text"):
        ablation_effect(model, TEXT, [(1, 0)], baseline=other)
