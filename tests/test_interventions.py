"""Interventions: head ablations are exact (GQA included), paths resolve, errors are clear."""

from __future__ import annotations

import re

import mlx.core as mx
import numpy as np
import pytest
from conftest import TEXT, case_tokens, head_outputs, out_proj

from mlx_headwidget import interventions as iv
from mlx_headwidget.errors import (
    InterventionError,
    InterventionTypeError,
    OutOfRangeError,
    UnknownPathError,
)
from mlx_headwidget.testing import assert_logits_close

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS


def _logits(model, tokens, interventions=None) -> np.ndarray:
    with model.trace(tokens, interventions=interventions, capture=False) as trace:
        pass
    return np.array(trace.logits)


def test_zero_heads_all_equals_zero_out_or_the_bias(case, models):
    """Zeroing every head leaves the output projection's bias (zero when there is none)."""
    model = models(case)
    tokens = case_tokens(model, case)
    layer = model.n_layers - 1
    path = f"model.model.layers.{layer}.self_attn"
    plain = _logits(model, tokens)
    all_heads = _logits(model, tokens, {path: iv.zero_heads(range(model.n_heads))})
    bias = getattr(out_proj(model, layer), "bias", None)
    assert (bias is not None) == (case == "gpt2")
    if bias is None:
        expected = _logits(model, tokens, {path: iv.zero_out})
    else:
        expected = _logits(model, tokens, {path: lambda x: mx.broadcast_to(bias, x.shape)})
    np.testing.assert_array_equal(all_heads, expected)
    assert np.abs(all_heads - plain).max() > 1e-3
    nothing = {
        f"model.model.layers.{i}.self_attn": iv.zero_heads([]) for i in range(model.n_layers)
    }
    np.testing.assert_array_equal(_logits(model, tokens, nothing), plain)


def _recorded(model, tokens, interventions, path):
    """Output of the module at `path` in a forward with `interventions`, and the pattern trace."""
    seen = {}

    def record(x):
        seen["out"] = np.array(x)
        return x

    with model.trace(tokens, interventions={**interventions, path: record}) as trace:
        pass
    return seen["out"], trace


def test_zero_one_head_of_a_kv_group(llama):
    """Head 1 shares its keys and values with head 0 (GQA): zeroing it must leave head 0 alone."""
    assert llama.n_kv_heads < llama.n_heads
    tokens = llama.to_tokens(TEXT)
    layer = 0
    norm = f"model.model.layers.{layer}.input_layernorm"
    x, clean = _recorded(llama, tokens, {}, norm)
    heads = head_outputs(llama, layer, clean.attention[layer], x)  # (B, T, H, D)
    keep = mx.array([1.0, 0.0, 1.0, 1.0])[None, None, :, None]
    B, T = heads.shape[:2]
    expected = np.array(out_proj(llama, layer)((heads * keep).reshape(B, T, -1)))
    path = f"model.model.layers.{layer}.self_attn"
    out, _ = _recorded(llama, tokens, {path: iv.zero_heads([1])}, path + ".o_proj")
    np.testing.assert_allclose(out, expected, atol=1e-5)
    group, _ = _recorded(llama, tokens, {path: iv.zero_heads([0, 1])}, path + ".o_proj")
    assert np.abs(group - out).max() > 1e-3


def test_mean_heads_uses_each_row_real_positions(llama):
    texts = ["The cat sat on the mat.", "A longer text: the cat sat on the mat, again and again."]
    layer, head = 1, 2
    path = f"model.model.layers.{layer}.self_attn"
    norm = f"model.model.layers.{layer}.input_layernorm"
    out, _ = _recorded(llama, texts, {path: iv.mean_heads([head])}, path + ".o_proj")
    for i, text in enumerate(texts):
        x, clean = _recorded(llama, text, {}, norm)
        heads = np.array(head_outputs(llama, layer, clean.attention[layer], x))
        heads[:, :, head] = heads[:, :, head].mean(axis=1, keepdims=True)
        B, T = heads.shape[:2]
        expected = np.array(out_proj(llama, layer)(mx.array(heads).reshape(B, T, -1)))
        np.testing.assert_allclose(out[i : i + 1, :T], expected, atol=1e-5)


def test_scale_and_whole_modules(llama, models):
    tokens = llama.to_tokens(TEXT)
    plain = _logits(llama, tokens)
    mlp = "model.model.layers.0.mlp"
    np.testing.assert_array_equal(_logits(llama, tokens, {mlp: iv.scale(1.0)}), plain)
    np.testing.assert_array_equal(
        _logits(llama, tokens, {mlp: iv.scale(0.0)}), _logits(llama, tokens, {mlp: iv.zero_out})
    )
    assert np.abs(_logits(llama, tokens, {mlp: iv.scale(2.0)}) - plain).max() > 1e-3
    # The last layer's output -> 0: RMSNorm(0) = 0, so every logit is exactly 0.
    assert (_logits(llama, tokens, {"model.model.layers.1": iv.zero_out}) == 0).all()
    # Wrapping a mistral layer keeps attributes the model reads (use_sliding) reachable.
    mistral = models("mistral")
    tokens = mistral.to_tokens(TEXT)
    same = _logits(mistral, tokens, {"model.model.layers.0": lambda x: x})
    np.testing.assert_array_equal(same, _logits(mistral, tokens))


def test_layer_attention_alias_in_gpt2(models):
    gpt2 = models("gpt2")
    tokens = gpt2.to_tokens(TEXT)
    alias = _logits(gpt2, tokens, {"model.model.layers.1.self_attn": iv.zero_out})
    real = _logits(gpt2, tokens, {"model.model.h.1.attn": iv.zero_out})
    np.testing.assert_array_equal(alias, real)
    assert np.abs(alias - _logits(gpt2, tokens)).max() > 1e-3
    mlp = _logits(gpt2, tokens, {"model.model.layers.1.mlp": iv.zero_out})
    np.testing.assert_array_equal(mlp, _logits(gpt2, tokens, {"model.model.h.1.mlp": iv.zero_out}))


def test_ablate_heads_groups_by_layer():
    got = iv.ablate_heads([(0, 1), (1, 2), (0, 3), (0, 1)])
    assert got == {
        "model.model.layers.0.self_attn": iv.zero_heads([1, 3]),
        "model.model.layers.1.self_attn": iv.zero_heads([2]),
    }
    assert iv.ablate_heads([(2, 0)], mode="mean") == {
        "model.model.layers.2.self_attn": iv.mean_heads([0])
    }
    with pytest.raises(ValueError, match="mode must be 'zero' or 'mean'"):
        iv.ablate_heads([(0, 0)], mode="noise")


def _boom(x):
    raise RuntimeError("boom")


BAD = [
    ({"model.model.layers.0.self_atn": iv.zero_out}, UnknownPathError,
     "unknown module path 'model.model.layers.0.self_atn'; closest valid paths: "
     "model.model.layers.0.self_attn"),
    ({"model.layers.9.mlp": iv.zero_out}, UnknownPathError, "unknown module path"),
    ({"model.model.layers.0.mlp": 3}, InterventionTypeError,
     "intervention for 'model.model.layers.0.mlp' is not callable: got 3"),
    ({"model.model.layers.0.self_attn": iv.zero_heads([4])}, OutOfRangeError,
     "head 4 is out of range for 'model.model.layers.0.self_attn': valid heads are 0..3"),
    ({"model.model.layers.0.mlp": iv.zero_heads([0])}, InterventionTypeError,
     "head interventions apply to an attention module"),
    ([("model.model.layers.0.mlp", iv.zero_out)], InterventionTypeError,
     "interventions must be a dict"),
    ({"model.model.layers.0.mlp": _boom}, InterventionError,
     "intervention on 'model.model.layers.0.mlp' raised RuntimeError: boom"),
    ({"model.model.layers.1.self_attn": lambda x: x[:, :1]}, InterventionError,
     "intervention on 'model.model.layers.1.self_attn' returned (1, 1, 64); it must return"),
    ({"model.model.layers.0.mlp": lambda x: x * mx.nan}, InterventionError,
     "intervention on 'model.model.layers.0.mlp' returned NaN values"),
    ({"model.model.layers.0.self_attn": iv.replace_heads(mx.zeros((1, 5, 64)),
                                                         np.ones((1, 3), bool))},
     InterventionError, "replace_heads on 'model.model.layers.0.self_attn': mask has 3 heads and "
     "source 64 values per position; this model needs 4 heads and 64 (n_heads * d_head)"),
    ({"model.model.layers.0.self_attn": iv.replace_heads(mx.zeros((1, 5, 64)),
                                                         np.ones((1, 4), bool))},
     InterventionError, "replace_heads: input of shape (1, 33, 64) but source (1, 5, 64) and "
     "mask (1, 4); need source (1, 33, 64)"),
    ({"model.model.layers.0.self_attn": iv.on_heads(lambda h: h[..., :1])}, InterventionError,
     "intervention on 'model.model.layers.0.self_attn' raised InterventionError: on_heads: the "
     "function returned (1, 33, 4, 1); it must return an mx.array of the heads' shape "
     "(1, 33, 4, 16) (B, T, n_heads, d_head)"),
    ({"model.model.norm": iv.on_input(3)}, InterventionTypeError,
     "on_input for 'model.model.norm' needs a function f(x) -> x, got 3"),
]  # fmt: skip


@pytest.mark.parametrize(("interventions", "error", "message"), BAD)
def test_bad_interventions_raise_and_leave_the_model_as_it_was(
    llama, model_state, interventions, error, message
):
    tokens = llama.to_tokens(TEXT)
    plain = _logits(llama, tokens)
    before = model_state(llama)
    with pytest.raises(error, match=re.escape(message)):
        with llama.trace(tokens, interventions=interventions):
            pass
    assert model_state(llama) == before
    np.testing.assert_array_equal(_logits(llama, tokens), plain)


def test_head_indices_are_checked_when_made():
    with pytest.raises(InterventionTypeError, match=re.escape("got -1")):
        iv.zero_heads([-1])
    with pytest.raises(InterventionTypeError, match=re.escape("got 'a'")):
        iv.mean_heads(["a"])
    assert iv.zero_heads(2) == iv.zero_heads([2, 2])


def test_replace_heads_patches_each_row_its_own_heads(llama):
    """Row r of a batch takes head r from another run's heads; each row equals a one-row run
    patched by on_heads (a batch against one row: LOGITS_RTOL); an empty mask changes nothing."""
    tokens = llama.to_tokens(TEXT)
    other = tokens[:, ::-1]
    layer, H = 1, llama.n_heads
    path = f"model.model.layers.{layer}.self_attn"
    seen = {}

    def keep(h):
        seen["z"] = h
        return h

    _logits(llama, other, {path: iv.on_heads(keep)})
    source = seen["z"].reshape(1, tokens.shape[1], -1)
    batch = mx.repeat(tokens, H, axis=0)
    patched = _logits(llama, batch, {path: iv.replace_heads(source, np.eye(H, dtype=bool))})
    for head in range(H):
        chosen = (mx.arange(H) == head)[None, None, :, None]
        one = _logits(
            llama, tokens, {path: iv.on_heads(lambda h, c=chosen: mx.where(c, seen["z"], h))}
        )
        assert_logits_close(patched[head : head + 1], one)
        assert np.abs(one - _logits(llama, tokens)).max() > 1e-3
    empty = iv.replace_heads(source, np.zeros((1, H), bool))
    np.testing.assert_array_equal(_logits(llama, tokens, {path: empty}), _logits(llama, tokens))
    with pytest.raises(InterventionTypeError, match=re.escape("mask as a bool array (B, n_heads)")):
        iv.replace_heads(source, np.ones((1, H)))
    with pytest.raises(InterventionTypeError, match=re.escape("source as an mx.array")):
        iv.replace_heads(np.zeros((1, 3, 64)), np.ones((1, H), bool))


def test_on_input_sees_the_modules_input(llama):
    """The final norm's input is the last layer's output (the same array)."""
    seen = {}

    def keep(key):
        def f(x):
            seen[key] = np.array(x)
            return x

        return f

    tokens = llama.to_tokens(TEXT)
    ivs = {"model.model.norm": iv.on_input(keep("in")), "model.model.layers.1": keep("out")}
    np.testing.assert_array_equal(_logits(llama, tokens, ivs), _logits(llama, tokens))
    np.testing.assert_array_equal(seen["in"], seen["out"])
    zeroed = _logits(llama, tokens, {"model.model.norm": iv.on_input(iv.zero_out)})
    assert (zeroed == 0).all()  # RMSNorm(0) = 0
