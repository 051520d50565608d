"""Direct logit attribution: the terms add up to the model's logit, each head's term through the
model's own modules, refusals (soft-capped logits, a residual that is not a sum), bad input."""

from __future__ import annotations

import re

import mlx.core as mx
import numpy as np
import pytest
from conftest import TEXT

from mlx_headwidget import attribution, patching
from mlx_headwidget import interventions as iv
from mlx_headwidget.detect import random_repeated_tokens
from mlx_headwidget.errors import InputError, UnsupportedArchitectureError
from mlx_headwidget.testing import assert_logits_close

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

CASES = ["llama", "llama-4bit", "qwen2", "qwen3", "mistral", "phi3", "gpt2", "bundled"]
SUM_ATOL = 1e-4  # the terms against the model's logit: measured up to 6.5e-7 (docs/numerics.md)


def model_and_text(models, bundled, case):
    if case == "bundled":
        x = random_repeated_tokens(bundled, 20, 2, seed=3)[0].tolist()
        return bundled, x[:36], x[16], x[5]  # [BOS] x x[:15]: the copy continues with x[15]
    return models(case), TEXT, 5, 7


@pytest.mark.parametrize("case", CASES)
def test_the_terms_add_up_to_the_models_logit(models, bundled, case):
    model, text, answer, distractor = model_and_text(models, bundled, case)
    with model.trace(text, capture=False) as trace:
        last = np.array(trace.logits[0, -1], dtype=np.float64)
    for d in (None, distractor):
        got = attribution.logit_attribution(model, text, answer, d)
        own = last[answer] - (0.0 if d is None else last[d])
        assert_logits_close(got.logit, own)  # a traced forward with recording hooks vs plain
        assert abs(got.total() - got.logit) <= SUM_ATOL
        assert got.heads.shape == (model.n_layers, model.n_heads)
        assert np.abs(got.heads).max() > 1e-3 and np.abs(got.mlps).max() > 1e-3
        np.testing.assert_array_equal(
            attribution.head_logit_attribution(model, text, answer, d), got.heads
        )
    biases = got.attention_bias
    assert (np.abs(biases).max() > 1e-6) == (case == "gpt2")  # only gpt2's c_proj has a bias


def _record(model, text):
    """z (n_heads, d_head) per layer and the final norm's input, at the last position."""
    seen = {}
    norm = "model.model.ln_f" if model.architecture == "gpt2" else "model.model.norm"

    def keep(key):
        def f(x):
            seen[key] = x[0, -1]
            return x

        return f

    ivs = {norm: iv.on_input(keep("final"))}
    for layer in range(model.n_layers):
        ivs[f"model.model.layers.{layer}.self_attn"] = iv.on_heads(keep(layer))
    with model.trace(text, interventions=ivs, capture=False):
        pass
    return seen


@pytest.mark.parametrize("case", ["llama", "llama-4bit", "gpt2", "bundled"])
def test_each_head_term_through_the_models_own_modules(models, bundled, case):
    """A head's term again, computed with the model's modules (quantized ones too) instead of
    dense weights: o_proj(z with the other heads zeroed) - o_proj(0), the final norm's scale
    frozen, then the unembedding module on g * c / s."""
    model, text, answer, distractor = model_and_text(models, bundled, case)
    got = attribution.head_logit_attribution(model, text, answer, distractor)
    seen = _record(model, text)
    inner = model.model.model
    norm = inner.ln_f if case == "gpt2" else inner.norm
    x = seen["final"].astype(mx.float32)
    if case == "gpt2":  # LayerNorm: centred, divided by the standard deviation
        s = mx.sqrt(mx.var(x) + norm.eps)
    else:
        s = mx.sqrt(mx.mean(x * x) + norm.eps)
    head_module = getattr(model.model, "lm_head", None)
    unembed = head_module if head_module is not None else inner.wte

    def unembedded(v):
        out = unembed(v) if head_module is not None else unembed.as_linear(v)
        zero = unembed(mx.zeros_like(v)) if head_module is not None else 0.0  # lm_head's bias
        return out - zero

    for layer in range(model.n_layers):
        attn = model.attention(layer)
        out_proj = attn.c_proj if case == "gpt2" else attn.o_proj
        z = seen[layer]
        for head in range(model.n_heads):
            alone = mx.where((mx.arange(model.n_heads) == head)[:, None], z, 0.0)
            c = out_proj(alone.reshape(1, -1)) - out_proj(mx.zeros((1, z.size)))
            if case == "gpt2":
                c = c - c.mean()
            logits = unembedded(norm.weight * c / s)[0]
            expected = (logits[answer] - logits[distractor]).item()
            # float32 modules vs float64 dense weights: measured up to 4.9e-7
            assert abs(got[layer, head] - expected) <= 1e-5, (layer, head)


def test_soft_capped_logits_and_post_norms_are_refused(models, monkeypatch):
    gemma2 = models("gemma2")
    with pytest.raises(UnsupportedArchitectureError, match=re.escape("soft-caps its logits")):
        attribution.head_logit_attribution(gemma2, TEXT, 5)
    # Without the cap (a cap of 1e9 leaves logits as they are), gemma2's norms after attention
    # and MLP still make its residual more than a sum: the check catches it.
    monkeypatch.setattr(attribution, "_refuse_softcap", lambda model: None)
    monkeypatch.setattr(gemma2.model, "final_logit_softcapping", 1e9)
    with pytest.raises(UnsupportedArchitectureError, match=re.escape("is not embeddings + heads")):
        attribution.head_logit_attribution(gemma2, TEXT, 5)


def test_bad_input(llama):
    with pytest.raises(InputError, match=re.escape("answer 'the cat' is 3 tokens")):
        attribution.head_logit_attribution(llama, TEXT, "the cat")
    with pytest.raises(InputError, match=re.escape("answer and distractor are the same token")):
        attribution.head_logit_attribution(llama, TEXT, 5, 5)
    with pytest.raises(InputError, match=re.escape("text must be one sequence, got a batch of 2")):
        attribution.head_logit_attribution(llama, [TEXT, TEXT], 5)
    with pytest.raises(InputError, match=re.escape("answer id -1 is outside the vocabulary")):
        attribution.head_logit_attribution(llama, TEXT, -1)
    # the patching functions take answers the same way
    with pytest.raises(TypeError, match=re.escape("answer must be a token id or a one-token")):
        patching.patch_heads(llama, TEXT, TEXT, 2.5, 7)
