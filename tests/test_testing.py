"""Random-weight checkpoints: they load in mlx-lm and transformers and behave as configured."""

from __future__ import annotations

import json
import re

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import numpy as np
import pytest
from transformers import AutoTokenizer

from mlx_headwidget.testing import ARCHS, make_checkpoint

TINY = [arch for arch in ARCHS if arch != "llama-3.2-1b"]
TEXT = "Return the absolute value of the argument.\n  Tabs\tand  spaces, émoji 🙂 and 12345!"


def _forward(model: nn.Module, ids: list[int]) -> np.ndarray:
    return np.array(model(mx.array([ids])).astype(mx.float32))


@pytest.mark.parametrize("arch", TINY)
def test_tiny_checkpoint_loads_runs_and_tokenizes(arch, tmp_path):
    folder = make_checkpoint(arch, tmp_path / arch)
    config = json.loads((folder / "config.json").read_text())
    model, tokenizer = mlx_lm.load(str(folder))

    ids = tokenizer.encode(TEXT)
    assert ids[0] == tokenizer.bos_token_id == config["bos_token_id"]
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == TEXT
    assert tokenizer.eos_token_id == config["eos_token_id"]
    assert max(ids) < config["vocab_size"]

    logits = _forward(model, ids)
    assert logits.shape == (1, len(ids), config["vocab_size"])
    assert np.isfinite(logits).all()
    assert logits.std() > 1e-3

    hf = AutoTokenizer.from_pretrained(folder)
    assert hf(TEXT).input_ids == ids
    assert hf.decode(ids, skip_special_tokens=True) == TEXT
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == ("<s>", "</s>", "</s>")


@pytest.mark.parametrize("arch", TINY)
def test_4bit_checkpoint_loads_quantized(arch, tmp_path):
    folder = make_checkpoint(arch, tmp_path / arch, quantize_bits=4)
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    model, tokenizer = mlx_lm.load(str(folder))
    quantized = [m for _, m in model.named_modules() if isinstance(m, nn.QuantizedLinear)]
    assert quantized and all(m.bits == 4 for m in quantized)
    logits = _forward(model, tokenizer.encode(TEXT))
    assert np.isfinite(logits).all()


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    def weights(seed: int, name: str) -> dict[str, np.ndarray]:
        folder = make_checkpoint("qwen2", tmp_path / name, seed=seed)
        return {k: np.array(v) for k, v in mx.load(str(folder / "model.safetensors")).items()}

    first, again, other = weights(3, "a"), weights(3, "b"), weights(4, "c")
    assert first.keys() == again.keys() == other.keys()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not any(np.array_equal(first[k], other[k]) for k in first if k.endswith("proj.weight"))


def test_attention_is_far_from_uniform(tmp_path):
    """Layer 0 of the llama checkpoint, softmax(q k^T / sqrt(d)) computed by hand."""
    model, tokenizer = mlx_lm.load(str(make_checkpoint("llama", tmp_path / "llama")))
    ids = tokenizer.encode(TEXT)
    layer = model.model.layers[0]
    attn = layer.self_attn
    x = layer.input_layernorm(model.model.embed_tokens(mx.array([ids])))
    T, H, K, D = len(ids), attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = attn.rope(attn.q_proj(x).reshape(1, T, H, D).transpose(0, 2, 1, 3))
    k = attn.rope(attn.k_proj(x).reshape(1, T, K, D).transpose(0, 2, 1, 3))
    k = mx.repeat(k, H // K, axis=1)  # GQA: query head h reads key head h // (H // K)
    scores = (q @ k.transpose(0, 1, 3, 2)) * D**-0.5
    causal = mx.tril(mx.ones((T, T), dtype=mx.bool_))
    pattern = np.array(mx.softmax(mx.where(causal, scores, -mx.inf), axis=-1))
    # Uniform attention over rows 8.. would give a mean maximum of at most 1/9.
    assert pattern[..., 8:, :].max(axis=-1).mean() > 0.3


def test_mistral_window_is_applied(tmp_path):
    """Same weights with every layer full: logits agree for positions < window, differ after."""
    folder = str(make_checkpoint("mistral", tmp_path / "mistral"))
    windowed, tokenizer = mlx_lm.load(folder)
    full, _ = mlx_lm.load(folder, model_config={"layer_types": ["full_attention"] * 2})
    assert windowed.model.sliding_window == 8 and windowed.model.layers[0].use_sliding
    ids = tokenizer.encode(TEXT)[:20]
    a, b = _forward(windowed, ids), _forward(full, ids)
    np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-5)
    assert np.abs(a[:, 8:] - b[:, 8:]).max(axis=-1).min() > 1e-3


def test_vocab_override_and_config_overrides(tmp_path):
    folder = make_checkpoint("llama", tmp_path / "v", vocab_size=1000, num_hidden_layers=3)
    config = json.loads((folder / "config.json").read_text())
    assert (config["vocab_size"], config["num_hidden_layers"]) == (1000, 3)
    model, tokenizer = mlx_lm.load(str(folder))
    assert len(model.model.layers) == 3
    assert _forward(model, tokenizer.encode(TEXT)).shape[-1] == 1000


def test_llama_3_2_1b_shapes_in_4bit(tmp_path):
    folder = make_checkpoint("llama-3.2-1b", tmp_path / "l1b", quantize_bits=4)
    config = json.loads((folder / "config.json").read_text())
    expected = {
        "num_hidden_layers": 16,
        "hidden_size": 2048,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "intermediate_size": 8192,
        "rope_theta": 500000.0,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": True,
    }
    assert {key: config[key] for key in expected} == expected
    assert config["rope_scaling"]["rope_type"] == "llama3"
    assert config["rope_scaling"]["factor"] == 32.0
    model, tokenizer = mlx_lm.load(str(folder))
    assert model.model.layers[15].self_attn.q_proj.bits == 4
    # 4-bit matmuls on CPU cost ~0.1 s per token per layer stack: keep the prompt short.
    logits = _forward(model, tokenizer.encode("Hello")[:4])
    assert logits.shape[-1] == 512 and np.isfinite(logits).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "llama2"}, "unknown arch 'llama2'; valid: llama, qwen2"),
        ({"arch": "llama", "quantize_bits": 7}, "quantize_bits=7; valid"),
        ({"arch": "llama", "vocab_size": 100}, "vocab_size=100 is too small"),
        ({"arch": "mistral", "num_hidden_layers": 1}, "needs num_hidden_layers >= 2 (got 1)"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_checkpoint(folder=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x" / "config.json").exists()
