"""Load a GGUF file (llama.cpp's format) into the matching mlx-lm model class.

`load_gguf("model.gguf")` returns (mlx-lm model, tokenizer, config dict) for the architectures in
`ARCHITECTURES`. What it does, in order, and refuses (`GGUFError`, naming the file) before building
anything if the file does not fit:

- header: read and checked (`gguf_file.read_header`): GGUF v2/v3, every tensor inside the file,
  every tensor type in `gguf_file.SUPPORTED`;
- config: from `{arch}.*` metadata (layers, widths, heads, KV heads, head size, RMSNorm epsilon,
  RoPE base and linear scaling, context length); tied output embedding when there is no
  `output.weight`;
- tensors: read by `mx.load`; Q4_0, Q4_1 and Q8_0 arrive as MLX's packed weights with float16 scales
  and biases (group size 32), which are widened to float32 (exactly), and each module is quantized
  with its own bit width (8 for an embedding, 4 for matrices in the same file, ...); Q6_K arrives
  as float16; BF16 is read here;
- names: `blk.N.attn_q` -> `model.layers.N.self_attn.q_proj`, etc. (`MODULE_NAMES`); every tensor
  the model needs must be present and no other;
- Q/K layout: for `llama`, llama.cpp's converter reorders the rows of q and k inside each head so
  that its RoPE rotates adjacent pairs (2i, 2i+1); mlx-lm's Llama rotates (i, i + d/2). The rows
  are put back (`unpermute_rows`), giving the original Hugging Face weights. qwen2/qwen3 files are
  not reordered (llama.cpp runs them with the (i, i + d/2) rotation);
- `rope_freqs.weight` (Llama 3.1+): per-frequency divisors of the RoPE angles, used as they are;
- tokenizer: from the metadata (`gguf_tokenizer.build_tokenizer`).

With `dequantize=True` quantized tensors become float32 matrices instead (see `quantized.py`).
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from .errors import GGUFError
from .gguf_file import EXPANDED, QUANTIZED, GGUFHeader, read_header, read_raw
from .gguf_tokenizer import build_tokenizer
from .quantized import float32_weight

ARCHITECTURES = ("llama", "qwen2", "qwen3")
GROUP_SIZE = 32  # every GGUF block type MLX keeps quantized has 32 values per block
MODULE_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
"""GGUF module name (inside `blk.N.` for a layer) -> mlx-lm module path."""
_GGUF_NAMES = {v: k for k, v in MODULE_NAMES.items()}
_REQUIRED = object()


def mlx_module(gguf_module: str) -> str | None:
    """`blk.3.attn_q` -> `model.layers.3.self_attn.q_proj`; None for a name we do not know."""
    layer = re.fullmatch(r"blk\.(\d+)\.(\w+)", gguf_module)
    if layer:
        inner = MODULE_NAMES.get(layer[2])
        return None if inner is None else f"model.layers.{layer[1]}.{inner}"
    top = gguf_module in ("token_embd", "output_norm", "output")
    return MODULE_NAMES[gguf_module] if top else None


def gguf_tensor(mlx_param: str) -> str:
    """`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight` (for messages)."""
    module, leaf = mlx_param.rsplit(".", 1)
    layer = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", module)
    if layer:
        return f"blk.{layer[1]}.{_GGUF_NAMES.get(layer[2], layer[2])}.{leaf}"
    return f"{_GGUF_NAMES.get(module, module)}.{leaf}"


def unpermute_rows(w: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's q/k row order. w: (n_heads * d, ...) rows, or packed rows with scales.

    Per head, llama.cpp stores row (half, i) of the original at position 2 i + half (adjacent
    pairs); this puts position 2 i + half back at half * d/2 + i. Quantization groups run along the
    input dimension, so packed weights, scales and biases permute row for row alike.
    """
    d = w.shape[0] // n_heads
    return w.reshape(n_heads, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class FactorRoPE(nn.Module):
    """RoPE with per-frequency divisors (`rope_freqs.weight`, as llama.cpp applies them).

    Pair i of a head of size d (dims i and i + d/2) at position p turns by the angle
    p * scale * base^(-2i/d) / factors[i] (scale: 1 / the linear RoPE scaling factor, or 1).
    """

    def __init__(self, dims: int, base: float, factors: mx.array, scale: float = 1.0):
        super().__init__()
        self.dims, self.scale = dims, scale
        # mx.fast.rope takes the inverse frequencies: angle = p / freqs[i]
        self._freqs = base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims) * factors

    def __call__(self, x: mx.array, offset: int = 0) -> mx.array:
        return mx.fast.rope(
            x,
            self.dims,
            traditional=False,
            base=None,
            scale=self.scale,
            offset=offset,
            freqs=self._freqs,
        )


def _scalar(header: GGUFHeader, key: str, default: Any = _REQUIRED) -> Any:
    value = header.metadata.get(key, default)
    if value is _REQUIRED:
        raise GGUFError(f"{header.path}: metadata {key!r} is missing")
    if isinstance(value, (list, np.ndarray)):
        raise GGUFError(f"{header.path}: metadata {key!r} varies per layer, which is not supported")
    return value


def model_config(header: GGUFHeader) -> dict[str, Any]:
    """The mlx-lm (Hugging Face style) config of the model in the file, from its metadata."""
    path, meta, tensors = header.path, header.metadata, header.tensors
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(
            f"{path}: architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}"
        )

    def get(key: str, default: Any = _REQUIRED) -> Any:
        return _scalar(header, f"{arch}.{key}", default)

    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", hidden // heads))
    for key in ("attention.value_length", "rope.dimension_count"):
        if int(get(key, head_dim)) != head_dim:
            raise GGUFError(
                f"{path}: {arch}.{key} = {get(key)} differs from the head size {head_dim}, which "
                "is not supported (partial RoPE or a separate value size)"
            )
    if "token_embd.weight" not in tensors:
        raise GGUFError(f"{path}: the file has no token_embd.weight (the token embedding)")
    config = {
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "rope_scaling": _rope_scaling(header, arch),
        "max_position_embeddings": int(get("context_length")),
        "vocab_size": tensors["token_embd.weight"].shape[0],
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    if arch == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in tensors
        config["mlp_bias"] = "blk.0.ffn_up.bias" in tensors
    if arch == "qwen2" and head_dim * heads != hidden:
        raise GGUFError(f"{path}: qwen2 with head size {head_dim} x {heads} heads != {hidden}")
    for key, name in (("bos", "bos_token_id"), ("eos", "eos_token_id")):
        if f"tokenizer.ggml.{key}_token_id" in meta:
            config[name] = int(meta[f"tokenizer.ggml.{key}_token_id"])
    return config


def _rope_scaling(header: GGUFHeader, arch: str) -> dict | None:
    kind = _scalar(header, f"{arch}.rope.scaling.type", "none")
    factor = float(_scalar(header, f"{arch}.rope.scaling.factor", 1.0))
    if kind == "none" and f"{arch}.rope.scale_linear" in header.metadata:  # older files
        kind, factor = "linear", float(_scalar(header, f"{arch}.rope.scale_linear"))
    if kind == "none" or (kind == "linear" and factor == 1.0):
        return None
    if kind == "linear":
        return {"type": "linear", "factor": factor}
    raise GGUFError(
        f"{header.path}: RoPE scaling {kind!r} is not supported; supported: none, linear, "
        "and llama.cpp's rope_freqs tensor"
    )


def read_tensors(header: GGUFHeader) -> dict[str, mx.array]:
    """Every tensor of the file by its GGUF name; a quantized `X.weight` comes with `X.scales` and
    `X.biases` (MLX's packed layout, group size 32)."""
    try:
        loaded = mx.load(str(header.path))
    except Exception as err:  # MLX reports what it found; keep its words
        raise GGUFError(f"{header.path}: MLX could not read the tensors: {err}") from None
    out = {}
    for name, info in header.tensors.items():
        if info.type == "BF16":  # MLX would round bfloat16 to float16; keep it exact
            out[name] = mx.array(read_raw(header, name, "<u2")).view(mx.bfloat16)
            continue
        if name not in loaded:
            raise GGUFError(f"{header.path}: MLX did not load tensor {name!r} ({info.type})")
        out[name] = loaded[name]
        if info.type in QUANTIZED:
            base = name.removesuffix(".weight")
            out[base + ".scales"], out[base + ".biases"] = (
                loaded[base + ".scales"],
                loaded[base + ".biases"],
            )
        elif tuple(loaded[name].shape) != info.shape:
            raise GGUFError(
                f"{header.path}: tensor {name!r} loaded with shape {loaded[name].shape}, "
                f"the header says {info.shape}"
            )
    return out


def _model_weights(
    header: GGUFHeader, tensors: dict[str, mx.array], config: dict, dequantize: bool
) -> tuple[dict[str, mx.array], dict[str, int]]:
    """(mlx-lm parameter name -> array, module path -> bits of each module stored quantized)."""
    permuted = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    weights, bits = {}, {}
    for name, info in header.tensors.items():
        if name == "rope_freqs.weight":
            continue
        module, leaf = name.rsplit(".", 1)
        target = mlx_module(module)
        if target is None or leaf not in ("weight", "bias"):
            raise GGUFError(
                f"{header.path}: tensor {name!r} is not part of a {config['model_type']} model"
            )
        parts = {leaf: tensors[name]}
        if info.type in QUANTIZED:
            parts.update(scales=tensors[module + ".scales"], biases=tensors[module + ".biases"])
        n_heads = permuted.get(module.rsplit(".", 1)[-1])
        if config["model_type"] == "llama" and n_heads:
            parts = {k: unpermute_rows(v, n_heads) for k, v in parts.items()}
        if info.type in QUANTIZED:
            b = parts["weight"].shape[-1] * 32 // info.shape[-1]
            if dequantize:
                parts = {
                    "weight": float32_weight(
                        parts["weight"], parts["scales"], parts["biases"], GROUP_SIZE, b
                    )
                }
            else:
                # float16 -> float32 is exact and keeps the matmuls in float32: with float16
                # scales a quantized embedding would return its rows rounded to float16
                parts.update(scales=parts["scales"].astype(mx.float32))
                parts.update(biases=parts["biases"].astype(mx.float32))
            bits[target] = b
        elif info.type in EXPANDED and dequantize:
            parts = {k: v.astype(mx.float32) for k, v in parts.items()}
        weights.update({f"{target}.{k}": v for k, v in parts.items()})
    return weights, bits


def _build(header: GGUFHeader, config: dict, weights: dict, bits: dict, tensors: dict) -> nn.Module:
    arch = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    model = arch.Model(arch.ModelArgs.from_dict(config))
    if bits:
        nn.quantize(
            model,
            class_predicate=lambda p, m: (
                {"group_size": GROUP_SIZE, "bits": bits[p]} if p in bits else False
            ),
        )
    expected = dict(tree_flatten(model.parameters()))
    missing = [gguf_tensor(k) for k in expected if k not in weights]
    if missing:
        raise GGUFError(
            f"{header.path}: the file lacks {len(missing)} tensor(s) a {config['model_type']} "
            f"model needs: {', '.join(missing[:8])}"
        )
    for key, value in weights.items():
        if key not in expected:
            raise GGUFError(f"{header.path}: tensor {gguf_tensor(key)!r} is not part of this model")
        if value.shape != expected[key].shape:
            raise GGUFError(
                f"{header.path}: tensor {gguf_tensor(key)!r} has shape {tuple(value.shape)}, the "
                f"config (from the metadata) needs {tuple(expected[key].shape)}"
            )
    model.load_weights(list(weights.items()), strict=True)
    if "rope_freqs.weight" in tensors:
        factors = tensors["rope_freqs.weight"].astype(mx.float32)
        if factors.shape != (config["head_dim"] // 2,):
            raise GGUFError(
                f"{header.path}: rope_freqs.weight has shape {factors.shape}, the head size "
                f"{config['head_dim']} needs ({config['head_dim'] // 2},)"
            )
        scaling = config["rope_scaling"]
        scale = 1.0 / scaling["factor"] if scaling else 1.0
        rope = FactorRoPE(config["head_dim"], config["rope_theta"], factors, scale)
        for layer in model.layers:
            layer.self_attn.rope = rope
    model.eval()
    mx.eval(model.parameters())
    return model


def load_gguf(path: str | Path, dequantize: bool = False) -> tuple[nn.Module, Any, dict]:
    """(mlx-lm model, tokenizer wrapper, config) from the GGUF file at `path`.

    dequantize: quantized tensors become float32 matrices (4 bytes per weight) instead of MLX
    quantized layers; Q6_K (float16 once loaded) becomes float32 too. Other float16 / bfloat16
    tensors keep their type. Raises `GGUFError` naming the file and the problem; nothing is
    returned half-built.
    """
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    header = read_header(path)
    config = model_config(header)
    n_tokens = len(header.metadata.get("tokenizer.ggml.tokens", []))
    if n_tokens > config["vocab_size"]:
        raise GGUFError(
            f"{header.path}: the tokenizer has {n_tokens} tokens but token_embd.weight only "
            f"{config['vocab_size']} rows"
        )
    tokenizer = build_tokenizer(header.metadata, header.path, config["max_position_embeddings"])
    tensors = read_tensors(header)
    weights, bits = _model_weights(header, tensors, config, dequantize)
    model = _build(header, config, weights, {} if dequantize else bits, tensors)
    if bits:  # as mlx-lm writes it: the most common width, and the modules that differ
        common = Counter(bits.values()).most_common(1)[0][0]
        quantization = {"group_size": GROUP_SIZE, "bits": common} | {
            p: {"group_size": GROUP_SIZE, "bits": b} for p, b in bits.items() if b != common
        }
        config["dequantized_from" if dequantize else "quantization"] = quantization
    stops = [config["eos_token_id"]] if "eos_token_id" in config else []
    if header.metadata.get("tokenizer.ggml.eot_token_id") is not None:  # end of turn
        stops.append(int(header.metadata["tokenizer.ggml.eot_token_id"]))
    return model, TokenizerWrapper(tokenizer, eos_token_ids=stops), config
