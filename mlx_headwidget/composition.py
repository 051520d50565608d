"""Weight-based composition scores between heads (Elhage et al. 2021, "A Mathematical Framework
for Transformer Circuits").

For a head with query/key/value rows W_Q, W_K, W_V (d_head, d_model) (its KV group's W_K, W_V under
GQA) and output projection columns W_O (d_model, d_head), on column vectors of the residual stream:

    W_QK = W_Q^T W_K   (d_model, d_model)   score(x_q, x_k) = x_q^T W_QK x_k / sqrt(d_head)
    W_OV = W_O W_V     (d_model, d_model)   what the head writes when it attends to x: W_OV x

An earlier head 1 (layer l1) writes W_OV1 x into the residual; a later head 2 (layer l2 > l1) reads
it as a key, a query or a value:

    K-composition:  ||W_QK2 W_OV1||_F   / (||W_QK2||_F ||W_OV1||_F)
    Q-composition:  ||W_QK2^T W_OV1||_F / (||W_QK2||_F ||W_OV1||_F)
    V-composition:  ||W_OV2 W_OV1||_F   / (||W_OV2||_F ||W_OV1||_F)

Left out: RoPE (W_QK is the unrotated bilinear form: position-dependent rotations are not weights),
the norms' division by the RMS / standard deviation, a LayerNorm's mean subtraction, q/k norms,
and biases. With `fold_norms=True` each head's reading weights W_Q, W_K, W_V are multiplied by its
layer's input norm weight g (W diag(g)), as the head reads g * x / rms(x); with False the raw
projections are used. Quantized weights are dequantized first (`weights.dense`).

Every d_model x d_model matrix here has rank <= d_head, so no such matrix is formed: with A = L R,
B = L' R' (L (d_model, d_head), R (d_head, d_model)), ||A B||_F^2 = tr(M^T (L^T L) M (R' R'^T)) with
M = R L' (d_head, d_head), and ||A||_F^2 = tr((L^T L)(R R^T)).
"""

from __future__ import annotations

from collections.abc import Iterable

import mlx.nn as nn
import numpy as np

from .errors import OutOfRangeError, UnsupportedArchitectureError
from .progress import Progress, ticker
from .weights import AttentionWeights, attention_weights

KINDS = ("k", "q", "v")
_INPUT_NORMS = ("input_layernorm", "ln_1", "attention_norm", "ln1")


def _norm_weight(model, layer: int) -> np.ndarray | None:
    """The input norm's weight g (d_model,) of `layer`'s attention, or None when it has none."""
    block = model.layers[layer]
    names = [n for n in _INPUT_NORMS if isinstance(getattr(block, n, None), nn.Module)]
    norm = getattr(block, names[0]) if names else None
    if norm is None or not isinstance(norm, (nn.RMSNorm, nn.LayerNorm)):
        found = "none" if norm is None else f"{type(norm).__module__}.{type(norm).__name__}"
        raise UnsupportedArchitectureError(
            f"cannot fold layer {layer}'s input norm (found: {found}; known: mlx.nn.RMSNorm and "
            "mlx.nn.LayerNorm named " + ", ".join(_INPUT_NORMS) + "); pass fold_norms=False"
        )
    return np.array(norm.weight, dtype=np.float32) if "weight" in norm else None


def _factors(w: AttentionWeights, n_heads: int, g: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per query head (n_heads, ...), float32: the reading rows q, k, v (d_head, d_model) with g
    folded in, and the writing columns o (d_model, d_head)."""
    group = n_heads // w.k.shape[0]
    scale = 1.0 if g is None else g[None, None, :]
    return {
        "q": w.q * scale,
        "k": np.repeat(w.k, group, axis=0) * scale,  # query head h reads KV group h // group
        "v": np.repeat(w.v, group, axis=0) * scale,
        "o": w.o,
    }


def _gram(a: np.ndarray) -> np.ndarray:
    """a (n, p, q) -> a a^T (n, p, p), float64."""
    a = a.astype(np.float64)
    return a @ a.transpose(0, 2, 1)


def _left_gram(x: dict[str, np.ndarray], name: str) -> np.ndarray:
    """L^T L (n_heads, d_head, d_head) of a left factor: o (d_model, d_head), or q^T / k^T."""
    return _gram(x[name].transpose(0, 2, 1)) if name == "o" else _gram(x[name])


def _norms(gl: np.ndarray, gr: np.ndarray) -> np.ndarray:
    """||L R||_F = sqrt(tr((L^T L)(R R^T))) per head, from the two grams."""
    return np.sqrt(np.einsum("hij,hji->h", gl, gr).clip(min=0))


def _pair_scores(reader: tuple, writer: tuple, group: int) -> np.ndarray:
    """Scores (h2, h1) of every head of a later layer (reader) on every head of an earlier one.

    reader: (its R's rows, one per group of `group` heads (n, d_head, d_model); L^T L (H, D, D);
    norms (H,)); writer: (W_O (d_model, H * D), columns (h1, j); R R^T of W_V (H, D, D); norms).
    """
    rows, gl2, norm2 = reader
    o1, gv1, norm1 = writer
    H, D = gl2.shape[:2]
    # M[h2, h1] = R2[h2] W_O1[h1] (D, D): one float32 matmul for every pair of heads
    m = (rows.reshape(-1, rows.shape[2]) @ o1).astype(np.float64)
    m = m.reshape(-1, D, H, D).transpose(0, 2, 1, 3)[np.arange(H) // group]  # (h2, h1, D, D)
    # ||L2 M R1||_F^2 = tr(M^T (L2^T L2) M (R1 R1^T)) = sum((L2^T L2 M) * (M R1 R1^T))
    num = np.sqrt(((gl2[:, None] @ m) * (m @ gv1[None])).sum(axis=(2, 3)).clip(min=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / (norm2[:, None] * norm1[None, :])


def _reader_layers(layers: Iterable[int] | None, n_layers: int) -> list[int]:
    """Every layer, or the given ones checked and sorted."""
    if layers is None:
        return list(range(n_layers))
    out = set()
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise TypeError(f"layers must be integers, got {layer!r}")
        if not 0 <= layer < n_layers:
            raise OutOfRangeError(f"layer {layer} is out of range: valid 0..{n_layers - 1}")
        out.add(int(layer))
    return sorted(out)


def composition_scores(
    model,
    kind: str = "k",
    *,
    fold_norms: bool = True,
    layers: Iterable[int] | None = None,
    progress: Progress = False,
) -> np.ndarray:
    """Composition scores of every earlier head into every later one (module docstring):
    (n_layers, n_heads, n_layers, n_heads) float64, scores[l1, h1, l2, h2] = how much head
    (l2, h2) reads, by `kind` ("k", "q" or "v"), what head (l1, h1) writes; NaN where l2 <= l1.

    `layers`: only these reading layers l2 (from every earlier layer; other l2 NaN), for a few
    heads of a deep model: the cost grows with the pairs of layers. `progress`: True for a tqdm
    bar over the pairs of layers, or a callable(done, total). About 30 s for a
    Llama-3.2-1B-shaped model on 2 CPU cores; milliseconds for the bundled model.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    L, H = model.n_layers, model.n_heads
    readers = [l2 for l2 in _reader_layers(layers, L) if l2 > 0]  # layer 0 reads no head
    f = [
        _factors(attention_weights(model, i), H, _norm_weight(model, i) if fold_norms else None)
        for i in range(L)
    ]
    # Each matrix as L R: W_OV = (W_O)(W_V), W_QK = (W_Q^T)(W_K), W_QK^T = (W_K^T)(W_Q); the
    # reader's L and R: (K) q^T and k; (Q) k^T and q; (V) o and v
    read_l, read_r = {"k": ("q", "k"), "q": ("k", "q"), "v": ("o", "v")}[kind]
    group = H // model.n_kv_heads if read_r in ("k", "v") else 1  # K, V: once per KV group
    writers = []
    for x in f:
        gv = _gram(x["v"])
        o = x["o"].transpose(1, 0, 2).reshape(x["o"].shape[1], -1)  # (d_model, H * D)
        writers.append((o, gv, _norms(_left_gram(x, "o"), gv)))
    scores = np.full((L, H, L, H), np.nan)
    tick, close = ticker(progress, sum(readers), f"{kind.upper()}-composition")
    try:
        for l2 in readers:
            gl2 = _left_gram(f[l2], read_l)
            r2 = f[l2][read_r]
            reader = (r2[::group], gl2, _norms(gl2, _gram(r2)))
            for l1 in range(l2):
                scores[l1, :, l2, :] = _pair_scores(reader, writers[l1], group).T
                tick()
    finally:
        close()
    return scores
