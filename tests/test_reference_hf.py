"""Our traced attention equals an independent implementation: Hugging Face's LlamaForCausalLM.

Same weights (the llama checkpoint's safetensors, which already use Hugging Face's names and
layouts), CPU torch, eager attention, float32. The checkpoint has grouped-query attention (4 query
heads, 2 KV heads), so a wrong head-to-KV-group mapping or a pattern taken before RoPE fails here.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from mlx_headwidget import InterpretableModel
from mlx_headwidget.capture import capture_attention
from mlx_headwidget.testing import make_checkpoint

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

PATTERN_ATOL = 1e-4
LOGITS_ATOL = 1e-3
PROMPT = "The cat sat on the mat because the cat liked the mat. The cat sat on the"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_checkpoint("llama", tmp_path_factory.mktemp("llama"), seed=7)


@pytest.fixture(scope="module")
def model(folder) -> InterpretableModel:
    return InterpretableModel(str(folder))


@pytest.fixture(scope="module")
def tokens(model) -> np.ndarray:
    """(2, T) int32: the prompt with BOS, and random ids with BOS, same length, no padding."""
    prompt = np.array(model.to_tokens(PROMPT))[0]
    rng = np.random.default_rng(0)
    random_ids = rng.integers(2, model.vocab_size, size=prompt.shape[0] - 1)
    return np.stack([prompt, np.concatenate([prompt[:1], random_ids])]).astype(np.int32)


@pytest.fixture(scope="module")
def reference(folder, tokens) -> tuple[np.ndarray, list[np.ndarray]]:
    """Hugging Face logits (B, T, V) and attentions, one (B, H, T, T) array per layer."""
    hf, info = LlamaForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32, output_loading_info=True
    )
    assert info["missing_keys"] == info["unexpected_keys"] == info["mismatched_keys"] == set()
    hf.eval()
    with torch.no_grad():
        out = hf(torch.from_numpy(tokens.astype(np.int64)), output_attentions=True)
    return out.logits.numpy(), [a.numpy() for a in out.attentions]


def test_reference_is_a_demanding_one(model, reference):
    """Heads differ within a KV group and attention is far from uniform, so the check has teeth."""
    _, attentions = reference
    assert model.n_heads == 4 and model.n_kv_heads == 2 and len(attentions) == model.n_layers
    for pattern in attentions:
        assert np.abs(pattern[:, 0] - pattern[:, 1]).max() > 0.1
        assert pattern[:, :, 8:].max(axis=-1).mean() > 0.3


def test_trace_patterns_and_logits_equal_hugging_face(model, tokens, reference):
    hf_logits, hf_attentions = reference
    with model.trace(mx.array(tokens)) as trace:
        logits = model.output.save()
    B, T = tokens.shape
    assert sorted(trace.attention) == list(range(model.n_layers))
    for layer, expected in enumerate(hf_attentions):
        ours = np.array(trace.attention[layer])
        assert ours.shape == (B, model.n_heads, T, T) == expected.shape
        for head in range(model.n_heads):
            np.testing.assert_allclose(
                ours[:, head],
                expected[:, head],
                atol=PATTERN_ATOL,
                rtol=0,
                err_msg=f"layer {layer} head {head}",
            )
    np.testing.assert_allclose(np.array(logits), hf_logits, atol=LOGITS_ATOL, rtol=0)
    np.testing.assert_allclose(np.array(trace.logits), hf_logits, atol=LOGITS_ATOL, rtol=0)


def test_low_level_capture_equals_hugging_face(model, tokens, reference):
    hf_logits, hf_attentions = reference
    seen: dict[int, np.ndarray] = {}

    def on_pattern(layer: int, pattern: mx.array) -> None:
        seen[layer] = np.array(pattern)

    logits = capture_attention(model, mx.array(tokens), layers=[1], on_pattern=on_pattern)
    assert list(seen) == [1]
    np.testing.assert_allclose(seen[1], hf_attentions[1], atol=PATTERN_ATOL, rtol=0)
    np.testing.assert_allclose(np.array(logits), hf_logits, atol=LOGITS_ATOL, rtol=0)
