"""Dense float32 weights of a model's projections, dequantized and split per head.

mlx-lm stores a projection as nn.Linear / nn.Embedding (weight (out, in)) or, in a quantized model,
as nn.QuantizedLinear / nn.QuantizedEmbedding. `dense` returns the float32 matrix either way
(`mx.dequantize` with the module's own group size, bits and mode), so weight-based analyses
(composition scores, direct logit attribution) use the numbers the model multiplies by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .errors import UnsupportedArchitectureError
from .interventions import out_projection_name

_TIED_EMBEDDINGS = ("embed_tokens", "wte", "tok_embeddings", "word_embeddings")


def dense(module: nn.Module, rows: Sequence[int] | None = None) -> np.ndarray:
    """The weight (out, in) of a linear or embedding module as float32, dequantized if quantized;
    only `rows` of it (e.g. a few vocabulary entries) when given."""
    if "weight" not in module:
        raise UnsupportedArchitectureError(f"{type(module).__name__} has no weight matrix")
    w = module["weight"]
    index = None if rows is None else mx.array(np.asarray(rows, dtype=np.int32))
    pick = (lambda a: a) if index is None else (lambda a: a[index])
    if "scales" in module:  # quantized along the input dimension: rows dequantize on their own
        biases = module.get("biases")
        w = mx.dequantize(
            pick(w),
            pick(module["scales"]),
            None if biases is None else pick(biases),
            group_size=module.group_size,
            bits=module.bits,
            mode=getattr(module, "mode", "affine"),
        )
    else:
        w = pick(w)
    return np.array(w.astype(mx.float32))


def bias(module: nn.Module, rows: Sequence[int] | None = None) -> np.ndarray | None:
    """The module's additive bias (out,) as float32 (only `rows` when given), or None."""
    if "bias" not in module:
        return None
    b = np.array(module["bias"].astype(mx.float32))
    return b if rows is None else b[np.asarray(rows)]


def unembedding(model) -> nn.Module:
    """The module that maps the final norm's output to logits: `lm_head`, or the tied input
    embedding (its weight (vocab, d_model) read as the unembedding)."""
    head = getattr(model.model, "lm_head", None)
    if isinstance(head, nn.Module):
        return head
    inner = getattr(model.model, "model", None)
    for name in _TIED_EMBEDDINGS:
        found = getattr(inner, name, None)
        if isinstance(found, nn.Module):
            return found
    raise UnsupportedArchitectureError(
        f"cannot find the unembedding of this {model.architecture!r} model: no lm_head and no "
        f"tied embedding named one of {', '.join(_TIED_EMBEDDINGS)}"
    )


@dataclass
class AttentionWeights:
    """One layer's attention weights, float32, per head (no biases).

    q (n_heads, d_head, d_model), k and v (n_kv_heads, d_head, d_model): rows of the projections
    (query head h reads key/value group h // (n_heads / n_kv_heads));
    o (n_heads, d_model, d_head): the output projection's columns for each head.
    """

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    o: np.ndarray


def attention_weights(model, layer: int) -> AttentionWeights:
    """`AttentionWeights` of `layer`, from q_proj/k_proj/v_proj, a fused qkv_proj ([q | k | v],
    phi3) or c_attn (gpt2), and the output projection; dequantized."""
    attn = model.attention(layer)
    H, KV, D = model.n_heads, model.n_kv_heads, model.d_head
    if all(isinstance(getattr(attn, n, None), nn.Module) for n in ("q_proj", "k_proj", "v_proj")):
        q, k, v = (dense(getattr(attn, n)) for n in ("q_proj", "k_proj", "v_proj"))
    else:
        fused = next((n for n in ("qkv_proj", "c_attn") if n in attn), None)
        if fused is None:
            raise UnsupportedArchitectureError(
                f"{type(attn).__name__} of layer {layer} has neither q_proj/k_proj/v_proj nor a "
                "fused qkv_proj or c_attn: its per-head weights cannot be read"
            )
        w = dense(attn[fused])
        q, k, v = np.split(w, [H * D, (H + KV) * D])
    o = dense(attn[out_projection_name(attn)])  # (d_model, H * D)
    expected = (H * D, KV * D, KV * D)
    if (q.shape[0], k.shape[0], v.shape[0]) != expected or o.shape[1] != H * D:
        raise UnsupportedArchitectureError(
            f"layer {layer}'s attention weights have shapes q {q.shape}, k {k.shape}, v {v.shape}, "
            f"o {o.shape}; expected {H} query heads and {KV} key/value heads of size {D}"
        )
    d = o.shape[0]
    return AttentionWeights(
        q=q.reshape(H, D, -1),
        k=k.reshape(KV, D, -1),
        v=v.reshape(KV, D, -1),
        o=o.reshape(d, H, D).transpose(1, 0, 2),
    )
