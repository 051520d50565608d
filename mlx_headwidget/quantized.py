"""Quantized layers on a CPU: dequantize them to float32 on load, by default.

MLX's CPU backend runs quantized matmuls at about 2 GFLOPS, against ~75 GFLOPS for a float32
matmul with OpenBLAS: SmolLM2-135M (Q4_1) takes 14 s for one forward of 101 tokens as loaded and
under 1 s dequantized. The price is memory: 4 bytes per weight instead of about 0.5-1 (4-8 bits
plus a float16 scale and bias per group of 32 or 64), i.e. 4 GB per billion weights. On Metal
quantized matmuls are fast, so there the layers stay quantized.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten


def dequantize_by_default(device: mx.Device | None = None) -> bool:
    """True when `device` (default: MLX's default device) is a CPU."""
    device = device or mx.default_device()
    return device.type == mx.cpu


def float32_weight(
    weight: mx.array,
    scales: mx.array,
    biases: mx.array | None,
    group_size: int,
    bits: int,
    mode: str = "affine",
) -> mx.array:
    """The float32 matrix (out, in) of packed `weight`: w = scale * q + bias in each group.

    Scales and biases are widened to float32 first, so the products are computed in float32
    (exactly, for 4- and 8-bit integers times float16 scales) instead of rounded to float16.
    """
    return mx.dequantize(
        weight,
        scales.astype(mx.float32),
        None if biases is None else biases.astype(mx.float32),
        group_size=group_size,
        bits=bits,
        mode=mode,
    )


def dequantize_layers(model: nn.Module, evaluate: bool = True) -> int:
    """Replace every `QuantizedLinear` / `QuantizedEmbedding` of `model` by a float32 layer.

    Linear biases keep their dtype. Returns how many layers were replaced (0: nothing quantized).
    `evaluate=False` leaves the new weights lazy (a model about to be sharded: each process then
    computes only the tensors it keeps a slice of, one at a time).
    """
    replaced = []
    for name, module in model.named_modules():
        if isinstance(module, nn.QuantizedLinear):
            out_dims, in_dims = module.scales.shape[0], module.scales.shape[1] * module.group_size
            layer = nn.Linear(in_dims, out_dims, bias="bias" in module)
            if "bias" in module:
                layer.bias = module.bias
        elif isinstance(module, nn.QuantizedEmbedding):
            layer = nn.Embedding(module.num_embeddings, module.dims)
        else:
            continue
        layer.weight = float32_weight(
            module.weight,
            module.scales,
            module.get("biases"),
            module.group_size,
            module.bits,
            getattr(module, "mode", "affine"),
        )
        if evaluate:  # one layer at a time: the peak is one layer, not the model
            mx.eval(layer.parameters())
        replaced.append((name, layer))
    if replaced:
        model.update_modules(tree_unflatten(replaced))
    return len(replaced)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes held by the parameters of `model` (packed weights, scales and biases included)."""
    return sum(p.nbytes for _, p in tree_flatten(model.parameters()))
