"""Small random GGUF models written with the `gguf` package (llama.cpp's own reader/writer), and an
independent float64 numpy forward of such a file over `gguf`'s own dequantization of its tensors.

The reference follows llama.cpp's semantics of the file, not ours: q/k rows as stored, RoPE
rotating adjacent pairs (2i, 2i+1) for `llama` (llama.cpp's "norm" RoPE, the layout its converter
writes) and pairs (i, i + d/2) for qwen2/qwen3 ("neox" RoPE); angles p * freq_scale * base^(-2i/d)
/ factor_i; RMSNorm; SwiGLU; grouped-query attention (head h reads KV head h // (H / KV)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES

from mlx_headwidget.testing import make_tokenizer

# Head sizes and widths are multiples of 32 where a quantized type needs whole blocks of 32 values
# along the rows (the input dimension); Q6_K needs 256.
SHAPE = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 16, "ffn": 128}
VOCAB = 512
CONTEXT = 256
QK_GAIN = 3.0  # sharp, structured attention (score std ~3), as in mlx_headwidget.testing
LAYER_TENSORS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass
class Spec:
    """What a test file holds. `types`: tensor name (without `.weight`) -> type; default F32."""

    arch: str = "llama"
    tied: bool = True
    types: dict[str, str] = field(default_factory=dict)
    head_dim: int = SHAPE["head_dim"]
    ffn: int = SHAPE["ffn"]
    rope_base: float = 10000.0
    linear_rope: float | None = None  # llama.cpp's rope.scaling.type = linear, with this factor
    rope_freqs: bool = False  # a rope_freqs.weight tensor (Llama 3.1+ per-frequency divisors)
    seed: int = 0


def _random_k_quant(rng: np.random.Generator, qt: Q, rows: int, cols: int) -> np.ndarray:
    """Random blocks of a K-quant (gguf cannot quantize to them); Q6_K's with a sane scale."""
    block, size = GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, size=(rows, cols // block * size), dtype=np.uint8)
    if qt == Q.Q6_K:  # its float16 super-block scale d is the block's last 2 bytes
        raw.reshape(-1, size)[:, -2:] = np.array([0.004], np.float16).view(np.uint8)
    return raw


def encode(rng: np.random.Generator, values: np.ndarray, type_name: str) -> np.ndarray:
    """`values` stored as ggml type `type_name` (numpy bytes for quantized types)."""
    qt = Q[type_name]
    if qt == Q.F32:
        return values.astype(np.float32)
    if qt == Q.F16:
        return values.astype(np.float16)
    if type_name.endswith("_K"):
        return _random_k_quant(rng, qt, *values.shape)
    return gguf.quants.quantize(values.astype(np.float32), qt)


def _random_weights(spec: Spec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    H, KV, D, d, F = SHAPE["hidden"], SHAPE["kv_heads"], spec.head_dim, spec.head_dim, spec.ffn
    heads = SHAPE["heads"]

    def matrix(rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
        return gain * rng.standard_normal((rows, cols)) / np.sqrt(cols)

    def norm(n: int) -> np.ndarray:
        return 1.0 + 0.1 * rng.standard_normal(n)

    w = {"token_embd": rng.standard_normal((VOCAB, H)), "output_norm": norm(H)}
    if not spec.tied:
        w["output"] = matrix(VOCAB, H)
    if spec.rope_freqs:
        w["rope_freqs"] = np.linspace(1.0, 8.0, d // 2)  # slower rotations for low frequencies
    for i in range(SHAPE["layers"]):
        b = f"blk.{i}."
        w |= {
            b + "attn_norm": norm(H),
            b + "attn_q": matrix(heads * D, H, QK_GAIN),
            b + "attn_k": matrix(KV * D, H, QK_GAIN),
            b + "attn_v": matrix(KV * D, H),
            b + "attn_output": matrix(H, heads * D),
            b + "ffn_norm": norm(H),
            b + "ffn_gate": matrix(F, H),
            b + "ffn_up": matrix(F, H),
            b + "ffn_down": matrix(H, F),
        }
        if spec.arch == "qwen2":
            sizes = {"attn_q.bias": heads * D, "attn_k.bias": KV * D, "attn_v.bias": KV * D}
            w |= {b + n: 0.5 * rng.standard_normal(r) for n, r in sizes.items()}
        if spec.arch == "qwen3":
            # unit-RMS queries and keys: norm weights sqrt(QK_GAIN) give the same sharpness
            gain = np.sqrt(QK_GAIN)
            w |= {b + "attn_q_norm": gain * norm(D), b + "attn_k_norm": gain * norm(D)}
    return w


def write_model(
    path: Path,
    spec: Spec,
    tokenizer_pre: str = "gpt2",
    *,
    arch: str | None = None,
    drop: tuple[str, ...] = (),
    extra: dict[str, np.ndarray] | None = None,
    ffn_metadata: int | None = None,
) -> Path:
    """Write a random `spec.arch` model with the byte-level tokenizer of `make_tokenizer(VOCAB)`.

    For files that must be refused: `arch` replaces the architecture name in the file, `drop`
    leaves tensors out, `extra` adds float32 ones, `ffn_metadata` states another FFN width.
    """
    rng = np.random.default_rng(spec.seed + 1)
    writer = gguf.GGUFWriter(str(path), arch or spec.arch)
    writer.add_block_count(SHAPE["layers"])
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(SHAPE["hidden"])
    writer.add_feed_forward_length(ffn_metadata or spec.ffn)
    writer.add_head_count(SHAPE["heads"])
    writer.add_head_count_kv(SHAPE["kv_heads"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(spec.rope_base)
    writer.add_rope_dimension_count(spec.head_dim)
    if spec.head_dim * SHAPE["heads"] != SHAPE["hidden"]:
        writer.add_key_length(spec.head_dim)
        writer.add_value_length(spec.head_dim)
    if spec.linear_rope:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(spec.linear_rope)
    write_tokenizer(writer, tokenizer_pre)
    weights = _random_weights(spec) | (extra or {})
    for name, values in weights.items():
        full = name if name.endswith(".bias") else name + ".weight"
        if full in drop:
            continue
        kind = spec.types.get(name, "F32") if values.ndim == 2 else "F32"
        data = encode(rng, values, kind)
        writer.add_tensor(full, data, raw_dtype=None if kind in ("F32", "F16") else Q[kind])
    _finish(writer)
    return path


def write_tokenizer(writer: gguf.GGUFWriter, pre: str = "gpt2", added: bool = False) -> None:
    """The byte-level BPE of `mlx_headwidget.testing.make_tokenizer(VOCAB)`: "</s>" = 0 (EOS),
    "<s>" = 1 (BOS), both control tokens, BOS added. `added`: two more tokens after the
    vocabulary (only for files without a model): "<|tool|>" (control), "<think>" (user defined)."""
    tok = make_tokenizer(VOCAB)
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    types = [3 if t in ("<s>", "</s>") else 1 for t in tokens]
    if added:
        tokens, types = [*tokens, "<|tool|>", "<think>"], [*types, 3, 4]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([" ".join(m) for m in _merges(tok)])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_chat_template("{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}")


def _merges(tok) -> list[tuple[str, str]]:
    import json

    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# The independent reference -----------------------------------------------------------------------
def read_file(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata {key: value}, {tensor name: float32 array}) through gguf's own reader and
    dequantizer (float32 is what it dequantizes to; the forward computes in float64)."""
    reader = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}
    return meta, tensors


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, theta: np.ndarray, neox: bool) -> np.ndarray:
    """x (heads, T, d), theta (T, d/2) angles: rotate pairs (2i, 2i+1), or (i, i + d/2) if neox."""
    d = x.shape[-1]
    a, b = (x[..., : d // 2], x[..., d // 2 :]) if neox else (x[..., 0::2], x[..., 1::2])
    cos, sin = np.cos(theta), np.sin(theta)
    ra, rb = a * cos - b * sin, a * sin + b * cos
    out = np.empty_like(x)
    if neox:
        out[..., : d // 2], out[..., d // 2 :] = ra, rb
    else:
        out[..., 0::2], out[..., 1::2] = ra, rb
    return out


def _heads(y: np.ndarray, n: int) -> np.ndarray:
    """(T, n * d) -> (n, T, d)."""
    return y.reshape(y.shape[0], n, -1).transpose(1, 0, 2)


def reference_forward(
    meta: dict, w: dict[str, np.ndarray], tokens: list[int]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(logits (T, vocab), [pattern (heads, T, T) per layer]) in float64, llama.cpp's semantics."""
    arch = meta["general.architecture"]
    H, KV = meta[f"{arch}.attention.head_count"], meta[f"{arch}.attention.head_count_kv"]
    eps = meta[f"{arch}.attention.layer_norm_rms_epsilon"]
    base = meta[f"{arch}.rope.freq_base"]
    d = meta.get(f"{arch}.attention.key_length", meta[f"{arch}.embedding_length"] // H)
    freq_scale = 1.0 / meta.get(f"{arch}.rope.scaling.factor", 1.0)
    T = len(tokens)
    inv = base ** (-np.arange(0, d, 2) / d) / w.get("rope_freqs.weight", 1.0)
    theta = np.arange(T)[:, None] * freq_scale * inv[None, :]  # (T, d/2)
    causal = np.tril(np.ones((T, T), bool))
    x = w["token_embd.weight"][tokens].astype(np.float64)  # float64 from here on
    patterns = []
    for i in range(meta[f"{arch}.block_count"]):
        p = f"blk.{i}."
        h = _rms_norm(x, w[p + "attn_norm.weight"], eps)

        q, k, v = (
            _heads(h @ w[p + n + ".weight"].T + w.get(p + n + ".bias", 0.0), count)
            for n, count in (("attn_q", H), ("attn_k", KV), ("attn_v", KV))
        )
        if p + "attn_q_norm.weight" in w:
            q = _rms_norm(q, w[p + "attn_q_norm.weight"], eps)
            k = _rms_norm(k, w[p + "attn_k_norm.weight"], eps)
        q, k = _rope(q, theta, arch != "llama"), _rope(k, theta, arch != "llama")
        k, v = np.repeat(k, H // KV, axis=0), np.repeat(v, H // KV, axis=0)
        scores = np.where(causal, q @ k.transpose(0, 2, 1) / np.sqrt(d), -np.inf)
        pattern = np.exp(scores - scores.max(-1, keepdims=True))
        pattern /= pattern.sum(-1, keepdims=True)
        patterns.append(pattern)
        attn = (pattern @ v).transpose(1, 0, 2).reshape(T, H * d)
        x = x + attn @ w[p + "attn_output.weight"].T
        h = _rms_norm(x, w[p + "ffn_norm.weight"], eps)
        gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = _rms_norm(x, w["output_norm.weight"], eps)
    return x @ w.get("output.weight", w["token_embd.weight"]).T, patterns
